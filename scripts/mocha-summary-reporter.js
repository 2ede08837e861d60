// Mocha's spec reporter plus a last line "N passed, N failed" that CI systems recognise.
"use strict";
const Mocha = require("mocha");

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const { passes, failures, pending } = runner.stats;
      // Printed after the spec reporter's own epilogue.
      process.nextTick(() =>
        console.log(`${passes} passed, ${failures} failed${pending ? `, ${pending} skipped` : ""}`),
      );
    });
  }
}

module.exports = SummaryReporter;
