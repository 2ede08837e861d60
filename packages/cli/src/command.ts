/** A `loramesh` subcommand. Register one only when it works end to end. */
export interface Command {
  name: string;
  /** One line for `loramesh --help`. */
  summary: string;
  /** Full help for `loramesh NAME --help`. */
  help(): string;
  /** Runs the command; the resolved number is the exit status. */
  run(argv: readonly string[]): Promise<number>;
}
