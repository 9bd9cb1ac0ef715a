// A small protobuf (proto3) encoder and decoder for the few messages the
// chart page uses, so the page needs no protobuf library. Each message is a
// schema: field number -> [name, type, repeated?, message schema]. Types:
// string, bool, int32, uint32, int64, uint64, enum, message.
//
// Encoding writes fields in field-number order and leaves out proto3 defaults
// (0, "", false, empty lists, absent messages), as prost does, so its bytes
// equal the Rust server's for the same message (the browser test compares
// them). Decoding fills every schema field with its default first and skips
// fields the schema does not list (any wire type). No message here has a
// repeated number, so packed encoding is not handled.
//
// 64-bit integers become JS numbers: exact up to 2^53, which revisions,
// trade counts and timestamps stay far below. Prices and quantities are
// decimal strings on the wire and stay strings here.

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export const Timestamp = {
  1: ['seconds', 'int64'],
  2: ['nanos', 'int32'],
};

export const Instrument = {
  1: ['symbol', 'string'],
  2: ['venue', 'string'],
  3: ['priceScale', 'uint32'],
  4: ['quantityScale', 'uint32'],
  5: ['timeZone', 'string'],
  // 6 sessions and 7 update_time are not used by the page (skipped).
};

export const ListInstrumentsRequest = {
  1: ['pageSize', 'int32'],
  2: ['pageToken', 'string'],
};

export const ListInstrumentsResponse = {
  1: ['instruments', 'message', true, Instrument],
  2: ['nextPageToken', 'string'],
};

export const Candle = {
  1: ['symbol', 'string'],
  2: ['interval', 'string'],
  3: ['openTime', 'message', false, Timestamp],
  4: ['closeTime', 'message', false, Timestamp],
  5: ['open', 'string'],
  6: ['high', 'string'],
  7: ['low', 'string'],
  8: ['close', 'string'],
  9: ['volume', 'string'],
  10: ['quoteVolume', 'string'],
  11: ['tradeCount', 'uint64'],
  12: ['closed', 'bool'],
  13: ['revision', 'uint64'],
};

/** CandleOrder values. */
export const CandleOrder = { UNSPECIFIED: 0, NEWEST_FIRST: 1, OLDEST_FIRST: 2 };

export const GetCandlesRequest = {
  1: ['symbol', 'string'],
  2: ['interval', 'string'],
  3: ['startTime', 'message', false, Timestamp],
  4: ['endTime', 'message', false, Timestamp],
  5: ['pageSize', 'int32'],
  6: ['pageToken', 'string'],
  7: ['order', 'enum'],
  8: ['fill', 'enum'],
};

export const GetCandlesResponse = {
  1: ['candles', 'message', true, Candle],
  2: ['nextPageToken', 'string'],
};

export const SubscribeCandlesRequest = {
  1: ['symbol', 'string'],
  2: ['intervals', 'string', true],
  3: ['cursor', 'string'],
};

export const SubscribeCandlesResponse = {
  1: ['candles', 'message', true, Candle],
  2: ['snapshot', 'bool'],
  3: ['cursor', 'string'],
};

/** Every schema by its proto message name (for tests and debugging). */
export const schemas = {
  Timestamp, Instrument, ListInstrumentsRequest, ListInstrumentsResponse, Candle,
  GetCandlesRequest, GetCandlesResponse, SubscribeCandlesRequest, SubscribeCandlesResponse,
};

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5;

// --- encoding -------------------------------------------------------------

/** The protobuf bytes of `value` (a plain object) as message `schema`. */
export function encode(schema, value) {
  const out = [];
  writeMessage(out, schema, value || {});
  return Uint8Array.from(out);
}

function writeMessage(out, schema, value) {
  const numbers = Object.keys(schema).map(Number).sort((a, b) => a - b);
  for (const number of numbers) {
    const [name, type, repeated, inner] = schema[number];
    const field = value[name];
    if (field === undefined || field === null) continue;
    for (const item of repeated ? field : [field]) {
      writeField(out, number, type, item, inner, repeated);
    }
  }
}

function writeField(out, number, type, value, inner, repeated) {
  switch (type) {
    case 'string': {
      if (value === '' && !repeated) return;
      const bytes = encoder.encode(value);
      writeVarint(out, (number << 3) | LEN);
      writeVarint(out, bytes.length);
      for (const b of bytes) out.push(b);
      return;
    }
    case 'message': {
      const body = [];
      writeMessage(body, inner, value);
      writeVarint(out, (number << 3) | LEN);
      writeVarint(out, body.length);
      for (const b of body) out.push(b);
      return;
    }
    case 'bool':
      if (!value && !repeated) return;
      writeVarint(out, (number << 3) | VARINT);
      out.push(value ? 1 : 0);
      return;
    default: // int32 uint32 int64 uint64 enum
      if (Number(value) === 0 && !repeated) return;
      writeVarint(out, (number << 3) | VARINT);
      writeVarint(out, value);
  }
}

function writeVarint(out, value) {
  // Negative numbers are 64-bit two's complement (10 bytes), as for int32 and int64.
  let n = BigInt.asUintN(64, BigInt(value));
  while (n > 0x7fn) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
}

// --- decoding -------------------------------------------------------------

/** Message `schema` decoded from `bytes` (a Uint8Array). */
export function decode(schema, bytes) {
  return readMessage({ bytes, pos: 0 }, schema, bytes.length);
}

function defaults(schema) {
  const value = {};
  for (const [name, type, repeated] of Object.values(schema)) {
    if (repeated) value[name] = [];
    else if (type === 'string') value[name] = '';
    else if (type === 'bool') value[name] = false;
    else if (type === 'message') value[name] = null;
    else value[name] = 0;
  }
  return value;
}

function readMessage(reader, schema, end) {
  const value = defaults(schema);
  while (reader.pos < end) {
    const key = readVarint(reader);
    const number = Number(key >> 3n);
    const wire = Number(key & 7n);
    const field = schema[number];
    if (!field) {
      skip(reader, wire);
      continue;
    }
    const [name, type, repeated, inner] = field;
    const item = readField(reader, type, wire, inner);
    if (repeated) value[name].push(item);
    else value[name] = item;
  }
  if (reader.pos !== end) throw new Error('protobuf: a field runs past the end of its message');
  return value;
}

function readField(reader, type, wire, inner) {
  if (type === 'string' || type === 'message') {
    if (wire !== LEN) throw new Error(`protobuf: wire type ${wire} for a ${type}`);
    const length = Number(readVarint(reader));
    const end = reader.pos + length;
    if (end > reader.bytes.length) throw new Error('protobuf: truncated');
    if (type === 'string') {
      const text = decoder.decode(reader.bytes.subarray(reader.pos, end));
      reader.pos = end;
      return text;
    }
    return readMessage(reader, inner, end);
  }
  if (wire !== VARINT) throw new Error(`protobuf: wire type ${wire} for a ${type}`);
  return scalar(type, readVarint(reader));
}

function scalar(type, raw) {
  switch (type) {
    case 'bool':
      return raw !== 0n;
    case 'int32':
    case 'enum':
      return Number(BigInt.asIntN(32, raw));
    case 'uint32':
      return Number(BigInt.asUintN(32, raw));
    case 'int64':
      return Number(BigInt.asIntN(64, raw));
    default: // uint64
      return Number(raw);
  }
}

function readVarint(reader) {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (reader.pos >= reader.bytes.length) throw new Error('protobuf: truncated varint');
    const b = reader.bytes[reader.pos++];
    result |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) return result;
    shift += 7n;
    if (shift > 63n) throw new Error('protobuf: varint too long');
  }
}

function skip(reader, wire) {
  switch (wire) {
    case VARINT:
      readVarint(reader);
      break;
    case FIXED64:
      reader.pos += 8;
      break;
    case LEN: {
      const length = Number(readVarint(reader));
      reader.pos += length;
      break;
    }
    case FIXED32:
      reader.pos += 4;
      break;
    default:
      throw new Error(`protobuf: unsupported wire type ${wire}`);
  }
  if (reader.pos > reader.bytes.length) throw new Error('protobuf: truncated');
}
