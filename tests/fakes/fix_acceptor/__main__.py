"""`python -m tests.fakes.fix_acceptor --port P`: the fake FIX acceptor for a user."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from ._acceptor import FakeFixAcceptor


def _quote(text: str) -> tuple[str, float, float, float]:
    symbol, bid, ask, last = text.split(":")
    return symbol, float(bid), float(ask), float(last)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.fix_acceptor",
        description="A fake FIX 4.4 acceptor (an OMS order desk) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=9878)
    parser.add_argument("--sender-comp-id", default="OMS", help="our 49 (default OMS)")
    parser.add_argument("--target-comp-id", default="APEX", help="the initiator's 49 (APEX)")
    parser.add_argument(
        "--quote",
        action="append",
        default=[],
        metavar="SYMBOL:BID:ASK:LAST",
        help="a quote (default AAPL:99:101:100)",
    )
    parser.add_argument("--mass-status", action="store_true", help="answer 35=AF")
    parser.add_argument("--positions", action="store_true", help="answer 35=AN")
    parser.add_argument("--decimal-quantities", action="store_true", help='send "10.0"')
    args = parser.parse_args(argv)
    fake = FakeFixAcceptor(
        sender_comp_id=args.sender_comp_id,
        target_comp_id=args.target_comp_id,
        port=args.port,
        mass_status=args.mass_status,
        positions=args.positions,
        decimal_quantities=args.decimal_quantities,
    )
    for symbol, bid, ask, last in [_quote(q) for q in args.quote or ["AAPL:99:101:100"]]:
        fake.book.quotes[symbol] = (bid, ask, last)
    logging.basicConfig(level=logging.INFO)

    async def serve() -> None:
        await fake.open()
        print(
            f"fake FIX 4.4 acceptor on {fake.host}:{fake.port}, "
            f"SenderCompID {fake.sender_comp_id}, TargetCompID {fake.target_comp_id}",
            flush=True,
        )
        assert fake._server is not None
        async with fake._server:
            await fake._server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
