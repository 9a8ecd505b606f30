// A form the mesh was too busy to take (web_svc/busy.py) is sent again by itself: after the wait
// the answer named and as much again at random, so that everyone told to wait does not come back
// at the same moment. The page carries what the form needs to be sent as it was.
const busy = document.querySelector("[data-resend-after]");
if (busy) {
  const form = busy.closest("form");
  const seconds = Number(busy.dataset.resendAfter) * (1 + Math.random());
  setTimeout(() => form.requestSubmit(), seconds * 1000);
}
