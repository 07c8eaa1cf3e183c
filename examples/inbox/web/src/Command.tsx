import { type FormEvent, useState } from "react";
import { ProtosyncError, type Document } from "protosync";
import { useAction } from "protosync/react";

import { api, type ProposedAction } from "./protosync/api";

/** How often a confirm interrupted by a dropped connection is sent again (same idempotency key: sent once). */
const CONFIRM_ATTEMPTS = 3;

/**
 * The command conversation's controls for a reply: a follow-up for the agent
 * (`respond` redrafts), then `confirm`, which sends the email once.
 */
export function Command({ action, onDismiss }: { action: Document<ProposedAction>; onDismiss: () => void }) {
  const respond = useAction(api.inbox.respond);
  const confirm = useAction(api.inbox.confirm);
  const [busy, setBusy] = useState<"respond" | "confirm" | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function run(what: "respond" | "confirm", work: () => Promise<unknown>) {
    setBusy(what);
    setError(null);
    try {
      await work();
    } catch (e) {
      setError(e instanceof ProtosyncError ? e.message.replace(/^[A-Z_]+: /, "") : String(e));
    } finally {
      setBusy(null);
    }
  }

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = event.currentTarget;
    const followUp = String(new FormData(form).get("followUp") ?? "").trim();
    if (followUp === "") return;
    await run("respond", async () => {
      await respond({ actionId: action.id, followUp });
      form.reset();
    });
  }

  const sendOnce = async () => {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await confirm({ actionId: action.id }, { idempotencyKey: `confirm:${action.id}` });
      } catch (e) {
        // The call is not resent by the SDK; the same key makes sending it again safe.
        if (!(e instanceof ProtosyncError && e.code === "CALL_INTERRUPTED") || attempt >= CONFIRM_ATTEMPTS) throw e;
      }
    }
  };

  return (
    <>
      <form className="respond" onSubmit={(e) => void submit(e)}>
        <input name="followUp" placeholder="Tell the agent what to change…" aria-label="Follow-up" maxLength={2000} disabled={busy !== null} />
        <button type="submit" disabled={busy !== null}>
          {busy === "respond" ? "Updating…" : "Update draft"}
        </button>
      </form>
      {error !== null && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <div className="actions">
        <button className="primary" disabled={busy !== null} onClick={() => void run("confirm", sendOnce)}>
          {busy === "confirm" ? "Sending…" : "Confirm & send"}
        </button>
        <button disabled={busy !== null} onClick={onDismiss}>
          Dismiss
        </button>
      </div>
    </>
  );
}
