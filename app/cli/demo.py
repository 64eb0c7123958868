"""`jumpscope demo build|report`: the embedded demo (synthetic world, tiny LM, SAE) and its validation.

    jumpscope demo build [--cache-dir DIR] [--small]
    jumpscope demo report [--cache-dir DIR] [--small] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from app.cli.common import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the embedded demo bundle, or print its validation report",
                       description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="demo_action", required=True, metavar="ACTION")
    b = actions.add_parser("build", help="(re)build the demo bundle: world, LM, SAE, eval, index, report")
    r = actions.add_parser("report", help="print the validation report of the built demo")
    for q in (b, r):
        q.add_argument("--cache-dir", help="cache directory (default: $JUMPSCOPE_CACHE or ~/.cache/jumpscope)")
        q.add_argument("--small", action="store_true", help="the scaled-down bundle (seconds; for tests)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _bar():
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}", file=sys.stderr)

    def progress(message: str, fraction: float) -> None:
        bar.set_description_str(message[:60])
        bar.update(max(0, round(100 * fraction) - bar.n))

    return bar, progress


def run(args: argparse.Namespace) -> int:
    from app.demo.bundle import DemoBundle, build_demo, bundle_root, bundle_size
    from app.demo.report import format_report, load_report

    if args.demo_action == "build":
        bar, progress = _bar()
        started = time.perf_counter()
        try:
            bundle = build_demo(args.cache_dir, progress=progress, small=args.small)
        finally:
            bar.close()
        seconds = time.perf_counter() - started
        print(f"demo bundle built in {bundle.root} in {seconds:.0f} s ({bundle_size(bundle.root) / 1e6:.1f} MB)")
        print(format_report(load_report(bundle.report_path)))
        return 0
    bundle = DemoBundle.at(bundle_root(args.cache_dir, args.small))
    if not bundle.report_path.exists():
        raise CLIError(f"no demo bundle in {bundle.root}; run `jumpscope demo build"
                       f"{' --small' if args.small else ''}` first")
    report = load_report(bundle.report_path)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
