//! Every error a client can see, declared once: its stable code, the HTTP
//! status it answers with, where it can occur and what it means. The
//! gateway renders errors from here; a test holds the tables of
//! docs/http-api.md and docs/protocol.md to exactly these codes.

/// Where a code can reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP answers only (the API, SSE requests, the WebSocket upgrade).
    Http,
    /// Sync-protocol `Error` messages only.
    Socket,
    /// Both.
    Both,
}

impl Transport {
    /// Whether a code of this transport can be an HTTP answer.
    pub fn on_http(self) -> bool {
        matches!(self, Transport::Http | Transport::Both)
    }

    /// Whether a code of this transport can be a sync-protocol error.
    pub fn on_socket(self) -> bool {
        matches!(self, Transport::Socket | Transport::Both)
    }
}

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $transport:ident, $meaning:literal;)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients see it, e.g. `VERSION_CONFLICT`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status of an answer with this code (socket-only codes
            /// have one too, for uniformity: 400).
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// Where the code can occur.
            pub fn transport(self) -> Transport {
                match self { $(ErrorCode::$variant => Transport::$transport,)* }
            }

            /// What it means, in one sentence.
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => $meaning,)* }
            }
        }
    };
}

error_codes! {
    BadRequest = "BAD_REQUEST", 400, Both, "The request does not have the shape the API expects.";
    UnknownCollection = "UNKNOWN_COLLECTION", 404, Both, "The collection is not in the schema.";
    InvalidDocument = "INVALID_DOCUMENT", 400, Both, "A document or patch does not fit its message type.";
    NotFound = "NOT_FOUND", 404, Both, "The document (or, on HTTP, the route) does not exist or may not be seen.";
    AlreadyExists = "ALREADY_EXISTS", 409, Both, "An insert of an id that exists.";
    VersionConflict = "VERSION_CONFLICT", 409, Both, "An op's expected version is not the document's.";
    PermissionDenied = "PERMISSION_DENIED", 403, Both, "A rule, or a service's collection list, denied the request.";
    LimitExceeded = "LIMIT_EXCEEDED", 413, Both, "The request exceeds a documented limit.";
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", 422, Both, "The idempotency key was used for a different request or by another caller.";
    InvalidQuery = "INVALID_QUERY", 400, Both, "The query does not fit the collection (field, operator, value, limit).";
    InvalidCursor = "INVALID_CURSOR", 400, Both, "The cursor was not made by this database for this query's order.";
    DuplicateSubscription = "DUPLICATE_SUBSCRIPTION", 400, Socket, "A subscription with this id is already open on the connection.";
    UnknownSubscription = "UNKNOWN_SUBSCRIPTION", 404, Socket, "No subscription with this id is open on the connection.";
    Unavailable = "UNAVAILABLE", 503, Both, "The database cannot be reached; retry later.";
    Internal = "INTERNAL", 500, Both, "A bug or a database in a state protosync did not leave it in.";
    MethodNotAllowed = "METHOD_NOT_ALLOWED", 405, Http, "A known path with the wrong HTTP method.";
    OriginNotAllowed = "ORIGIN_NOT_ALLOWED", 403, Http, "A browser page whose origin is not allowed.";
    RateLimited = "RATE_LIMITED", 429, Both, "Too many requests from this address or connection.";
    Unauthenticated = "UNAUTHENTICATED", 401, Both, "Credentials are malformed, unreadable or an unknown API key.";
    TokenInvalid = "TOKEN_INVALID", 401, Both, "The token is not a well-formed JWT this server accepts.";
    TokenInvalidIssuer = "TOKEN_INVALID_ISSUER", 401, Both, "No provider is configured for the token's issuer.";
    TokenInvalidAudience = "TOKEN_INVALID_AUDIENCE", 401, Both, "The token's audience is not the provider's.";
    TokenInvalidSignature = "TOKEN_INVALID_SIGNATURE", 401, Both, "The token's signature does not verify.";
    TokenUnknownKey = "TOKEN_UNKNOWN_KEY", 401, Both, "No key of the provider has the token's key id.";
    TokenMissingClaim = "TOKEN_MISSING_CLAIM", 401, Both, "The token lacks a claim the provider requires.";
    TokenExpired = "TOKEN_EXPIRED", 401, Both, "The token's expiry has passed.";
    TokenNotYetValid = "TOKEN_NOT_YET_VALID", 401, Both, "The token's not-before time is in the future.";
    TokenTooOld = "TOKEN_TOO_OLD", 401, Both, "The token was issued longer ago than the provider allows.";
    TokenRevoked = "TOKEN_REVOKED", 401, Both, "The token's id was revoked.";
    BadFrame = "BAD_FRAME", 400, Socket, "A sync-protocol frame that does not decode.";
    UnexpectedHello = "UNEXPECTED_HELLO", 400, Socket, "A hello after the first message of a connection.";
    UpgradeRequired = "UPGRADE_REQUIRED", 400, Socket, "A protocol version this server does not speak.";
    ProjectorConflict = "PROJECTOR_CONFLICT", 409, Http, "A projection batch writes a document another projector owns.";
    UnknownRebuild = "UNKNOWN_REBUILD", 404, Http, "The projector has no rebuild in progress with that generation.";
    UnknownAction = "UNKNOWN_ACTION", 404, Both, "The action is not in the schema.";
    InvalidArgument = "INVALID_ARGUMENT", 400, Both, "An action's arguments do not fit its request message (the path names the field).";
    ActionDenied = "ACTION_DENIED", 403, Both, "The action's allow rule denied the call; the backend was not called.";
    ActionFailed = "ACTION_FAILED", 502, Both, "The backend answered with an error (its code and message are passed on) or with a result that does not fit the response message.";
    ActionTimeout = "ACTION_TIMEOUT", 504, Both, "The backend did not answer within the action's timeout.";
    ActionUnavailable = "ACTION_UNAVAILABLE", 503, Both, "The backend cannot be reached or is not configured.";
    ChangesTruncated = "CHANGES_TRUNCATED", 410, Http, "The change feed was asked for commits older than the change log keeps.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_are_unique_upper_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{text}"
            );
            assert!((400..600).contains(&code.http_status()), "{text}");
        }
    }
}
