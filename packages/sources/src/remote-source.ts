/** What every remote source offers the fetcher: a listing of files and a byte stream per file. */

export interface RemoteFile {
  /** Path relative to the adapter's directory at the source ("adapter_config.json"). */
  name: string;
  /** Size the source announced, when it did (checked against what arrives). */
  size?: number;
}

export interface RemoteBody {
  chunks: AsyncIterable<Uint8Array>;
  /** Content length the server announced, when it did. */
  size?: number;
}

export interface RemoteSource {
  /** The source as the user wrote it, for messages. */
  readonly description: string;
  /** The files directly in the adapter's directory at the source. */
  list(signal?: AbortSignal): Promise<RemoteFile[]>;
  open(file: RemoteFile, signal?: AbortSignal): Promise<RemoteBody>;
}
