//! Systems that deliver one message to N subscribers without protosync's
//! work (no store, no rules, no views), measured with the same writer rate,
//! payload and clock as the fan-out, so the ratio says what protosync adds.

pub(crate) mod nats;
pub(crate) mod notify;
