// The reset mail's link carries its token in the URL fragment, which browsers never send to a
// server. Move it into the form (posted in the body), drop it from the address bar and history,
// and show only what is left to do: choose the new password. Also when the link is opened in a
// tab that shows this page already (then only the fragment changes).
(function () {
  function takeToken() {
    const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    const token = document.getElementById("token");
    if (!match || !token) return;
    token.value = decodeURIComponent(match[1]);
    history.replaceState(null, "", window.location.pathname + window.location.search);
    document.getElementById("token-field").hidden = true;
    document.getElementById("ask").hidden = true;
    document.getElementById("password").focus();
  }
  takeToken();
  window.addEventListener("hashchange", takeToken);
})();
