"""What handling one exit of a PV vCPU came to (`PVVcpu.handle_exit`), as a
value the run loop acts on (like Firecracker's VcpuEmulation):

* RESUME   - run the guest again; the handler set whatever registers it
             changed (a hypercall's rax, a bounce frame, an emulated insn).
* RETURNED - an iret (HYPERVISOR_iret, or one ending a multicall) switched
             to the frame's context: the registers are the frame's, rax
             must not be overwritten with a hypercall result.
* STOPPED  - the domain stopped while the exit was handled (shutdown,
             destroy, a crash from another thread): the loop ends.
* CRASH    - the guest broke the rules (or pyxen failed): the domain is
             crashed with `message`.

Blocking (SCHEDOP_block/poll, hlt) still happens inside the handler, without
the domain lock; the exit that blocked returns RESUME once woken.
"""
from __future__ import annotations


class Exit:
    __slots__ = ("kind", "message")
    RESUME: "Exit"
    RETURNED: "Exit"
    STOPPED: "Exit"

    def __init__(self, kind: str, message: str = ""):
        self.kind = kind
        self.message = message

    @classmethod
    def crash(cls, message: str) -> "Exit":
        return cls("crash", message)

    def __eq__(self, other) -> bool:
        return isinstance(other, Exit) and (self.kind, self.message) == (other.kind, other.message)

    def __hash__(self) -> int:
        return hash((self.kind, self.message))

    def __repr__(self) -> str:
        return f"Exit.{self.kind.upper()}" + (f"({self.message!r})" if self.message else "")


Exit.RESUME = Exit("resume")
Exit.RETURNED = Exit("returned")
Exit.STOPPED = Exit("stopped")
