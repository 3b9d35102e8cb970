"""The processor: JetStream -> MongoDB, per-patient ordered and exactly once (see docs/ARCHITECTURE.md).

Public names: :class:`Processor` (one pod's worth, for embedding and tests), :func:`serve` (the
``medevents processor`` command), the handler contract (:class:`HandlerContext`,
:class:`HandlerResult`, :class:`PermanentError`, :class:`TransientError`) and the fence's pure
decision (:func:`decide`).
"""

from .fence import Decision, FencingToken, decide
from .handlers import HandlerContext, HandlerResult, PermanentError, TransientError, simulate
from .server import serve
from .service import Processor

__all__ = [
    "Decision",
    "FencingToken",
    "HandlerContext",
    "HandlerResult",
    "PermanentError",
    "Processor",
    "TransientError",
    "decide",
    "serve",
    "simulate",
]
