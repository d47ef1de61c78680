"""Entry point of the deploy checks: `python scripts/deploy/check.py chart|docs|samples`,
run from the repository root by scripts/check-deploy.sh. Exits 1 when a check failed."""
import sys

import check_chart
import check_docs
from common import problems

STEPS = {"chart": check_chart.step_chart, "docs": check_docs.step_docs, "samples": check_docs.step_samples}
STEPS[sys.argv[1]]()
if problems:
    print(f"  {len(problems)} problem(s)", file=sys.stderr)
    sys.exit(1)
