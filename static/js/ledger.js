// Wallet ledger: a link to #entry-N opens that entry, even when it is on an older page.
// Without this file the server-side ?at=N link does the same job.
(() => {
  const match = /^#entry-(\d+)$/.exec(location.hash);
  if (!match) return;
  const row = document.getElementById(`entry-${match[1]}`);
  if (row) {
    row.classList.add("focus");
    const details = row.querySelector("details");
    if (details) details.open = true;
    return;
  }
  const url = new URL(location.href);
  if (url.searchParams.get("at") === match[1]) return; // already asked; the entry is filtered out
  url.search = "";
  url.searchParams.set("at", match[1]);
  location.replace(url.toString());
})();
