"""``lodestar-vllm-router``: the stock production-stack router, with ``--routing-logic learned`` available.

Accepts exactly the stock router's arguments plus ``--lodestar-*`` options (also settable as LODESTAR_*
environment variables). It checks the installed host (``compat.check_host``; a mismatch stops start-up with
the reason), creates the policy (restoring a checkpoint when configured) BEFORE the server listens, installs
the hooks, then hands over to the stock ``vllm_router.app.main``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lodestar_vllm.integrations.production_stack import settings as settings_mod

logger = logging.getLogger(__name__)


def split_argv(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(our --lodestar-* options, the stock router's arguments untouched)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    settings_mod.add_arguments(parser)
    ours, rest = parser.parse_known_args(list(argv))
    return ours, rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        help_parser = argparse.ArgumentParser(
            prog="lodestar-vllm-router",
            description="production-stack's router with the `learned` routing logic. All stock vllm-router "
            "arguments are accepted (see `vllm-router --help`); `--routing-logic learned` selects lodestar.",
            add_help=False,
        )
        settings_mod.add_arguments(help_parser)
        help_parser.print_help()
        print("\nStock router arguments:\n")
    ours, rest = split_argv(argv)

    from lodestar_vllm.integrations.production_stack import compat
    from lodestar_vllm.integrations.production_stack.runtime import LodestarRuntime, install_runtime

    try:
        host = compat.check_host()
        sys.argv = [sys.argv[0] if sys.argv else "lodestar-vllm-router", *rest]
        with compat.routing_logic_choice(host):
            stock_args = host.parser.parse_args()  # exits with the stock usage message on bad arguments
        if stock_args.routing_logic == compat.LEARNED:
            settings = settings_mod.LodestarSettings.from_sources(ours)
            install_runtime(LodestarRuntime(settings, engine_urls=compat.service_discovery_urls))
            logger.info("lodestar: policy %r ready (checkpoint %s)", settings.policy, settings.checkpoint_path)
            compat.activate(runtime_factory=None)
    except (compat.HostMismatch, ValueError, RuntimeError) as exc:  # settings, policy, checkpoint, host
        print(f"lodestar-vllm-router: {exc}", file=sys.stderr)
        return 2
    # Hand the already-parsed arguments to the stock main (it would otherwise re-parse without `learned`).
    host.app.parse_args = lambda: stock_args
    host.app.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
