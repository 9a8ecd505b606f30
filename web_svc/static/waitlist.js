// The waitlist mail's link carries its token in the URL fragment, which browsers never send to a
// server. Move it into the form, drop it from the address bar and history, and post it at once:
// the answer confirms the place and shows it. Also when the link is opened in a tab that shows
// this page already (then only the fragment changes).
(function () {
  function takeToken() {
    const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    const token = document.getElementById("token");
    const form = document.getElementById("place-form");
    if (!match || !token || !form) return;
    token.value = decodeURIComponent(match[1]);
    history.replaceState(null, "", window.location.pathname + window.location.search);
    document.getElementById("token-field").hidden = true;
    document.getElementById("place-lead").textContent = "Finding your place…";
    form.submit();
  }
  takeToken();
  window.addEventListener("hashchange", takeToken);
})();
