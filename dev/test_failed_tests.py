"""dev/failed_tests.py names the failed tests of a cargo test log with the end of their output."""

import os
import tempfile
import unittest

from failed_tests import failures, report

LOG = """\
running 3 tests
test a::passes ... ok
test b::fails ... FAILED
test c::times_out ... FAILED

failures:

---- b::fails stdout ----
some output
thread 'b::fails' panicked at shared/src/b.rs:10:5:
assertion `left == right` failed
  left: 1
 right: 2
stack backtrace:
   0: __rustc::rust_begin_unwind

failures:
    b::fails
    c::times_out

test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out
error: test failed, to rerun pass `-p sakuin --lib`
"""


class FailedTests(unittest.TestCase):
    def test_names_each_failure_with_its_panic(self):
        found = dict(failures(LOG))
        self.assertEqual(sorted(found), ["b::fails", "c::times_out"])
        self.assertIn("thread 'b::fails' panicked at shared/src/b.rs:10:5:", found["b::fails"])
        self.assertEqual(found["b::fails"][-2:], [" right: 2", "(backtrace in the log)"])
        self.assertEqual(found["c::times_out"], [])

    def test_a_passing_log_reports_nothing(self):
        self.assertEqual(failures("test a ... ok\n\ntest result: ok. 1 passed\n"), [])

    def test_report_reads_the_files(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "lib.log")
            with open(path, "w") as f:
                f.write(LOG)
            lines = report([path, os.path.join(d, "absent.log")])
        self.assertIn(f"FAILED b::fails  ({path})", lines)
        self.assertTrue(any("absent.log: cannot read" in line for line in lines))


if __name__ == "__main__":
    unittest.main()
