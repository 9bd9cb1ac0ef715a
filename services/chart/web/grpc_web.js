// gRPC-Web over fetch, for unary and server-streaming calls to the origin
// that served the page (the mesh's gRPC port; no proxy).
//
// Framing (application/grpc-web+proto): every message travels as a 5-byte
// prefix (a flag byte, then the length as a big-endian u32) and the message;
// the call's status comes last, in a frame flagged 0x80 whose payload is
// HTTP/1-style header lines ("grpc-status: 0"). A call that fails before its
// first message answers "trailers-only": the status in the response headers
// and no body.

/** gRPC status codes the page tells apart. */
export const Code = {
  OK: 0,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  UNIMPLEMENTED: 12,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
};

export class GrpcError extends Error {
  constructor(code, message) {
    super(`grpc status ${code}${message ? `: ${message}` : ''}`);
    this.code = code;
    this.grpcMessage = message;
  }
}

const TRAILER_FLAG = 0x80;
const COMPRESSED_FLAG = 0x01;

/** One frame: the 5-byte prefix, then `message`. */
export function frame(message) {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

/** Parses trailer (or header) lines into a lowercase-keyed object. */
export function parseTrailers(bytes) {
  const trailers = {};
  for (const line of new TextDecoder().decode(bytes).split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return trailers;
}

function statusError(code, message) {
  let text = message || '';
  try {
    text = decodeURIComponent(text);
  } catch {
    // not percent-encoded
  }
  return new GrpcError(code, text);
}

async function start(path, request, options) {
  const { signal, timeoutMs } = options;
  const headers = {
    'content-type': 'application/grpc-web+proto',
    'x-grpc-web': '1',
    'x-user-agent': 'tickmesh-chart/1',
  };
  if (timeoutMs) headers['grpc-timeout'] = `${Math.ceil(timeoutMs)}m`;
  let response;
  try {
    response = await fetch(path, { method: 'POST', headers, body: frame(request), signal, cache: 'no-store' });
  } catch (e) {
    if (signal && signal.aborted) throw e;
    throw new GrpcError(Code.UNAVAILABLE, `network: ${e.message}`);
  }
  const headerStatus = response.headers.get('grpc-status');
  if (headerStatus !== null && headerStatus !== '0') {
    throw statusError(Number(headerStatus), response.headers.get('grpc-message'));
  }
  if (!response.ok) {
    throw new GrpcError(response.status === 503 ? Code.UNAVAILABLE : Code.UNKNOWN, `http ${response.status}`);
  }
  if (options.onOpen) options.onOpen();
  return { response, trailersOnly: headerStatus === '0' };
}

/**
 * The messages of a server-streaming (or unary) call, as they arrive. Ends
 * when the server ends the call with OK; throws a GrpcError for any other
 * status or when the stream breaks off without one. Options: `signal` (an
 * AbortSignal), `timeoutMs` (sent as grpc-timeout), `onOpen` (called once
 * the server has answered with its headers).
 */
export async function* serverStream(path, request, options = {}) {
  const { response, trailersOnly } = await start(path, request, options);
  if (trailersOnly || !response.body) return;
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  let ended = false;
  try {
    for (;;) {
      while (buffer.length >= 5) {
        const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
        if (buffer.length < 5 + length) break;
        const flag = buffer[0];
        const payload = buffer.slice(5, 5 + length);
        buffer = buffer.subarray(5 + length);
        if (flag & TRAILER_FLAG) {
          // Read the body to its end: a response cancelled after its
          // trailers would count as an aborted request in the browser.
          while (!(await reader.read()).done);
          ended = true;
          const trailers = parseTrailers(payload);
          const code = Number(trailers['grpc-status'] ?? Code.UNKNOWN);
          if (code !== Code.OK) throw statusError(code, trailers['grpc-message']);
          return;
        }
        if (flag & COMPRESSED_FLAG) throw new GrpcError(Code.UNKNOWN, 'compressed message (none was asked for)');
        yield payload;
      }
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (options.signal && options.signal.aborted) throw e;
        throw new GrpcError(Code.UNAVAILABLE, `stream broke off: ${e.message}`);
      }
      if (chunk.done) throw new GrpcError(Code.UNAVAILABLE, 'stream ended without a status');
      const joined = new Uint8Array(buffer.length + chunk.value.length);
      joined.set(buffer);
      joined.set(chunk.value, buffer.length);
      buffer = joined;
    }
  } finally {
    // The caller stopped early (or the stream failed): let the server know.
    if (!ended) reader.cancel().catch(() => {});
  }
}

/** A unary call: the one response message. */
export async function unary(path, request, options = {}) {
  let result = null;
  for await (const message of serverStream(path, request, options)) result = message;
  if (result === null) throw new GrpcError(Code.UNKNOWN, 'no response message');
  return result;
}
