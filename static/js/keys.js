// Keys, models, settings and playground helpers. Every page works without this file.
(() => {
  const PREFIX = "localgate.key.";
  const remember = (id, secret) => {
    try { if (id && secret) sessionStorage.setItem(PREFIX + id, secret); } catch (e) { /* storage off */ }
  };
  const recall = (id) => {
    try { return sessionStorage.getItem(PREFIX + id); } catch (e) { return null; }
  };

  // Forms that change a lot at once ask first (the kill switch, revoke, rotate).
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // Pickers that reload the page (without JS their form has a submit button).
  document.addEventListener("change", (event) => {
    const el = event.target.closest("[data-autosubmit]");
    if (el && el.form) el.form.submit();
  });

  // A key was just created or rotated: this tab remembers its secret (sessionStorage,
  // gone when the tab closes) so the playground and test button can use it.
  const fresh = document.getElementById("new-key");
  if (fresh) remember(fresh.dataset.keyId, fresh.textContent.trim());

  // Secret fields: fill in what this tab remembers; remember what is typed.
  for (const input of document.querySelectorAll("input[data-remember-key]")) {
    const id = input.dataset.rememberKey;
    const known = recall(id);
    if (known && !input.value) input.value = known;
    input.addEventListener("change", () => remember(id, input.value.trim()));
  }
})();
