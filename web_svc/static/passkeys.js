// Passkeys for the console: the browser makes or uses the key (WebAuthn), so this needs a script.
// The options come from admin_svc through web_svc as JSON; the CSRF token rides in a header.
(function () {
  const csrfField = document.querySelector("input[name=csrf]");
  if (!csrfField || !window.PublicKeyCredential || !PublicKeyCredential.parseCreationOptionsFromJSON) return;

  async function post(url, body) {
    const answer = await fetch(url, {
      method: "POST",
      headers: {"content-type": "application/json", "x-csrf-token": csrfField.value},
      body: JSON.stringify(body || {}),
    });
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.message || "Something went wrong. Please try again.");
    return data;
  }

  function said(error) {
    document.getElementById("passkey-status").textContent =
      error.name === "NotAllowedError" ? "The passkey was not used. Please try again." : error.message;
  }

  const adding = document.getElementById("add-passkey");
  if (adding) {
    adding.hidden = false;
    adding.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const options = await post("/admin/passkeys/options");
        const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(JSON.parse(options.options));
        const credential = await navigator.credentials.create({publicKey});
        await post("/admin/passkeys", {name: document.getElementById("passkey-name").value, credential: credential.toJSON()});
        window.location.reload();
      } catch (error) {
        said(error);
      }
    });
  }

  const using = document.getElementById("use-passkey");
  if (using) {
    using.hidden = false;
    document.getElementById("use-passkey-button").addEventListener("click", async () => {
      try {
        const options = await post("/admin/sign-in/passkey/options");
        const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(JSON.parse(options.options));
        const credential = await navigator.credentials.get({publicKey});
        const done = await post("/admin/sign-in/passkey", {credential: credential.toJSON()});
        window.location.assign(done.next);
      } catch (error) {
        said(error);
      }
    });
  }
})();
