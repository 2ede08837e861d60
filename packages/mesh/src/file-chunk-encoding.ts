/**
 * A fast encoder for the peer fetch's `AdapterFileChunk` (the generated one is correct but slow for
 * megabyte chunks: its writer grows and copies its buffer, `finish()` copies the parts into one, and
 * the service's serializer copies that into a Buffer again). This one writes the protobuf wire
 * format into one Buffer of exactly the right size: the chunk's bytes are copied once.
 */
import type { AdapterFileChunk } from "@loramesh/proto";

const varintLength = (v: number): number => {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
};

/** Writes a non-negative integer (up to 2^53) as a varint; returns the position after it. */
function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 128) {
    buf[pos++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/** The same bytes as `AdapterFileChunk.encode(chunk).finish()` (proto3: zero fields are left out). */
export function encodeFileChunk(chunk: AdapterFileChunk): Buffer {
  const name = chunk.fileName === "" ? undefined : Buffer.from(chunk.fileName, "utf8");
  const data = chunk.data;
  let size = 0;
  if (name) size += 1 + varintLength(name.length) + name.length;
  if (chunk.fileSize !== 0) size += 1 + varintLength(chunk.fileSize);
  if (chunk.offset !== 0) size += 1 + varintLength(chunk.offset);
  if (data.length !== 0) size += 1 + varintLength(data.length) + data.length;
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  if (name) {
    buf[pos++] = (1 << 3) | 2;
    pos = writeVarint(buf, pos, name.length);
    pos += name.copy(buf, pos);
  }
  if (chunk.fileSize !== 0) {
    buf[pos++] = 2 << 3;
    pos = writeVarint(buf, pos, chunk.fileSize);
  }
  if (chunk.offset !== 0) {
    buf[pos++] = 3 << 3;
    pos = writeVarint(buf, pos, chunk.offset);
  }
  if (data.length !== 0) {
    buf[pos++] = (4 << 3) | 2;
    pos = writeVarint(buf, pos, data.length);
    buf.set(data, pos);
  }
  return buf;
}
