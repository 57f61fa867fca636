// While a top-up is pending, ask localgate to check it every 2.5 s and reload
// the page when its state changes. Without JavaScript a <noscript> meta
// refresh does the same, more crudely.
(() => {
  const page = document.querySelector("article.topup[data-topup]");
  if (!page) return;
  const id = page.dataset.topup;
  const status = page.dataset.status;
  const csrf = page.dataset.csrf;
  let delay = 2500;
  async function check() {
    try {
      const resp = await fetch(`/api/topups/${encodeURIComponent(id)}/sync`, {
        method: "POST",
        headers: { "x-csrf-token": csrf, "accept": "application/json" },
        credentials: "same-origin",
      });
      if (resp.ok) {
        const topup = await resp.json();
        if (topup.status !== status) {
          window.location.reload();
          return;
        }
      }
    } catch (err) {
      // offline for a moment: keep trying, a little slower
    }
    delay = Math.min(delay * 1.2, 10000);
    setTimeout(check, delay);
  }
  setTimeout(check, delay);
})();
