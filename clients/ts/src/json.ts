/** A JSON value, as in `google.protobuf.Value`. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object, as in `google.protobuf.Struct`. */
export type JsonObject = { [key: string]: JsonValue };

/**
 * A `float` or `double` in proto3 JSON: a number, or one of the three
 * strings the mapping uses for values JSON numbers cannot hold.
 */
export type ProtoDouble = number | "NaN" | "Infinity" | "-Infinity";
