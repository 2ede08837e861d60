import { formatOptionsHelp, loadConfig, stringOption } from "@loramesh/core";
import { InvalidArgumentError } from "@loramesh/errors";
import { checkHealth } from "@loramesh/sdk";
import type { Command } from "../command";

const options = {
  service: stringOption({
    flag: "service",
    default: "",
    description: "a service name to check (default: the whole server)",
  }),
};

/** `loramesh health HOST:PORT`: exit 0 when a loramesh process answers SERVING (container health checks). */
export const healthCommand: Command = {
  name: "health",
  summary: "check a loramesh process's gRPC health (exit 0 when SERVING)",
  help: () => `Usage: loramesh health HOST:PORT [--service NAME]\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config, positionals } = loadConfig(options, argv);
    const [address] = positionals;
    if (!address || positionals.length > 1) throw new InvalidArgumentError("usage: loramesh health HOST:PORT");
    const status = await checkHealth({ address }, config.service, 3_000);
    process.stdout.write(`${status}\n`);
    return status === "SERVING" ? 0 : 1;
  },
};
