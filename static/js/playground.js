// The playground's streaming send and live estimate. Without JS the form posts to
// /playground and the page comes back with the whole answer and its receipt.
(() => {
  const form = document.getElementById("send-form");
  if (!form || !window.fetch || !window.ReadableStream || !window.TextDecoder) return;
  const $ = (id) => document.getElementById(id);
  const result = $("result");
  const answer = $("answer");
  const receiptBox = $("receipt");
  const status = $("send-status");
  const button = $("send");
  const csrf = form.querySelector("input[name=csrf_token]").value;

  const showError = (message, code) => {
    let box = $("run-error");
    if (!box) {
      box = document.createElement("div");
      box.id = "run-error";
      box.className = "flash error";
      box.setAttribute("role", "alert");
      answer.before(box);
    }
    box.textContent = code ? `${code}: ${message}` : message;
  };

  const showReceipt = async (id) => {
    // The stream settles right after its last chunk; the fragment waits for that.
    for (let i = 0; i < 40; i += 1) {
      const resp = await fetch(`/playground/receipt/${encodeURIComponent(id)}`, { credentials: "same-origin" });
      if (resp.status === 202) { await new Promise((r) => setTimeout(r, 100)); continue; }
      if (resp.ok) { receiptBox.innerHTML = await resp.text(); return; }
      break;
    }
    receiptBox.innerHTML = "";
    const link = document.createElement("a");
    link.href = `/receipts/${encodeURIComponent(id)}`;
    link.textContent = `Receipt ${id}`;
    receiptBox.append(link);
  };

  const handleBlock = (block, state) => {
    for (const line of block.split("\n")) {
      if (line.startsWith("data:")) {
        const payload = line.slice(5).trim();
        if (payload === "[DONE]") continue;
        let event;
        try { event = JSON.parse(payload); } catch (e) { continue; }
        if (event.error) showError(event.error.message || "the stream failed", event.error.code);
        for (const choice of event.choices || []) {
          const delta = choice.delta || {};
          if (delta.content) answer.textContent += delta.content;
        }
      } else if (line.startsWith(": localgate ")) {
        // ": localgate receipt=rc_... charge=0.000421_CNY wallet=routed balance=..."
        for (const part of line.slice(12).trim().split(" ")) {
          const [name, value = ""] = part.split("=");
          // Amounts carry "_" for the space: charge=0.000421_CNY
          state[name] = name === "charge" || name === "balance" ? value.replace(/_/g, " ") : value;
        }
      }
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const secret = form.querySelector("input[name=secret]");
    if (secret && secret.value) {
      try { sessionStorage.setItem(`localgate.key.${secret.dataset.rememberKey}`, secret.value.trim()); } catch (e) { /* off */ }
    }
    result.hidden = false;
    answer.textContent = "";
    receiptBox.textContent = "";
    const old = $("run-error");
    if (old) old.remove();
    button.disabled = true;
    status.textContent = "Streaming…";
    const state = {};
    try {
      const resp = await fetch("/playground/stream", {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "x-csrf-token": csrf },
        credentials: "same-origin",
      });
      state.receipt = resp.headers.get("x-localgate-receipt");
      if (!resp.ok) {
        const data = await resp.json().catch(() => ({}));
        const error = data.error || {};
        showError(error.message || `HTTP ${resp.status}`, error.code);
      } else {
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
          let cut = buffer.indexOf("\n\n");
          while (cut >= 0) {
            handleBlock(buffer.slice(0, cut), state);
            buffer = buffer.slice(cut + 2);
            cut = buffer.indexOf("\n\n");
          }
        }
        if (buffer.trim()) handleBlock(buffer, state);
      }
    } catch (err) {
      showError(`the request failed: ${err}`);
    } finally {
      button.disabled = false;
      status.textContent = state.charge ? `Charged ${state.charge}` : "";
    }
    if (state.receipt) await showReceipt(state.receipt);
  });

  // Live estimate: the route preview's costs follow the message and max tokens.
  const prompt = $("prompt");
  const maxTokens = $("max_tokens");
  const rows = $("preview-rows");
  if (!rows || !prompt || !maxTokens) return;
  let timer = null;
  const refresh = async () => {
    const params = new URLSearchParams({
      key: form.querySelector("input[name=key]").value,
      model: form.querySelector("input[name=model]").value,
      prompt: prompt.value,
      max_tokens: maxTokens.value,
    });
    const resp = await fetch(`/playground/preview?${params}`, { credentials: "same-origin" });
    if (!resp.ok) return;
    const data = await resp.json();
    if (!data.preview) return;
    $("est-input").textContent = data.preview.input_tokens;
    $("est-max").textContent = data.preview.max_tokens;
    data.preview.routes.forEach((route, i) => {
      const row = rows.rows[i];
      if (!row) return;
      row.cells[5].textContent = route.input_cost;
      row.cells[6].textContent = route.max_cost;
      row.classList.toggle("unusable", !route.can_pay);
    });
  };
  const later = () => { clearTimeout(timer); timer = setTimeout(refresh, 350); };
  prompt.addEventListener("input", later);
  maxTokens.addEventListener("input", later);
})();
