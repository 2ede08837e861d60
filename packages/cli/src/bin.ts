#!/usr/bin/env node
/** The `loramesh` command. */
import { describeError, isLoraMeshError } from "@loramesh/errors";
import { LoraMeshClientError } from "@loramesh/sdk";
import type { Command } from "./command";
import { adaptersCommand } from "./commands/adapters";
import { benchCommand } from "./commands/bench";
import { calibrateCommand } from "./commands/calibrate";
import { generateCommand } from "./commands/generate";
import { healthCommand } from "./commands/health";
import { planCommand } from "./commands/plan";
import { simulateCommand } from "./commands/simulate";
import { scoreCommand } from "./commands/score";
import { upCommand } from "./commands/up";

const COMMANDS: readonly Command[] = [
  upCommand,
  adaptersCommand,
  generateCommand,
  scoreCommand,
  healthCommand,
  simulateCommand,
  planCommand,
  calibrateCommand,
  benchCommand,
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const lines = COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return `Usage: loramesh <command> [options]\n\nCommands:\n${lines.join("\n")}\n\nRun "loramesh <command> --help" for a command's options.\n`;
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`loramesh: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(command.help());
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (isLoraMeshError(err) || err instanceof LoraMeshClientError) {
      process.stderr.write(`loramesh ${name}: ${err.message}\n`);
      return err.name === "ConfigError" ? 2 : 1;
    }
    process.stderr.write(`loramesh ${name}: unexpected error: ${describeError(err)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`${describeError(err)}\n`);
    process.exitCode = 1;
  },
);
