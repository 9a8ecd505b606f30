// Linking a wallet on /me: the person's wallet (EIP-1193, window.ethereum) gives its address and
// signs chain_svc's Sign-In with Ethereum message, so this needs a script and a wallet. Without
// either, the page says how to link one and still shows and unlinks a linked wallet.
(function () {
  const linking = document.getElementById("link-wallet");
  const ethereum = window.ethereum;
  if (!linking || !ethereum || typeof ethereum.request !== "function") return;
  const csrf = linking.querySelector("input[name=csrf]").value;
  const status = document.getElementById("wallet-status");
  const needed = document.getElementById("wallet-needed");
  if (needed) needed.hidden = true;
  linking.hidden = false;

  async function post(url, body) {
    const answer = await fetch(url, {
      method: "POST",
      headers: {"content-type": "application/json", "x-csrf-token": csrf},
      body: JSON.stringify(body),
    });
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.message || "Something went wrong. Please try again.");
    return data;
  }

  function hex(text) {
    return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  document.getElementById("link-wallet-button").addEventListener("click", async () => {
    status.textContent = "Asking your wallet…";
    try {
      const [address] = await ethereum.request({method: "eth_requestAccounts"});
      const {message} = await post("/me/wallet/challenge", {address});
      status.textContent = "Please sign the message in your wallet.";
      const signature = await ethereum.request({method: "personal_sign", params: [hex(message), address]});
      await post("/me/wallet/link", {message, signature});
      window.location.reload();
    } catch (error) {
      // EIP-1193: 4001 is the person saying no in their wallet.
      status.textContent = error.code === 4001 ? "The wallet did not sign. Nothing was linked." : error.message;
    }
  });
})();
