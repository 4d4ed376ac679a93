/* Atomic operations on guest memory shared with running vCPUs.
 *
 * Event-channel bits, grant-table flags and ring indexes are updated by the
 * guest with locked instructions while pyxen touches the same words from
 * other threads; these helpers give pyxen the same guarantees. Addresses are
 * host virtual addresses (GuestMemory.addr + offset), checked by the caller.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <signal.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

static PyObject *set_bit(PyObject *self, PyObject *args) {
    unsigned long long addr; unsigned int bit;
    if (!PyArg_ParseTuple(args, "KI", &addr, &bit)) return NULL;
    uint64_t *p = (uint64_t *)(uintptr_t)addr + (bit >> 6);
    uint64_t mask = 1ULL << (bit & 63);
    uint64_t old = __atomic_fetch_or(p, mask, __ATOMIC_SEQ_CST);
    return PyBool_FromLong((old & mask) != 0);
}

static PyObject *clear_bit(PyObject *self, PyObject *args) {
    unsigned long long addr; unsigned int bit;
    if (!PyArg_ParseTuple(args, "KI", &addr, &bit)) return NULL;
    uint64_t *p = (uint64_t *)(uintptr_t)addr + (bit >> 6);
    uint64_t mask = 1ULL << (bit & 63);
    uint64_t old = __atomic_fetch_and(p, ~mask, __ATOMIC_SEQ_CST);
    return PyBool_FromLong((old & mask) != 0);
}

static PyObject *test_bit(PyObject *self, PyObject *args) {
    unsigned long long addr; unsigned int bit;
    if (!PyArg_ParseTuple(args, "KI", &addr, &bit)) return NULL;
    uint64_t *p = (uint64_t *)(uintptr_t)addr + (bit >> 6);
    return PyBool_FromLong((__atomic_load_n(p, __ATOMIC_SEQ_CST) >> (bit & 63)) & 1);
}

static PyObject *cmpxchg16(PyObject *self, PyObject *args) {
    unsigned long long addr; unsigned int expected, desired;
    if (!PyArg_ParseTuple(args, "KII", &addr, &expected, &desired)) return NULL;
    uint16_t e = (uint16_t)expected;
    __atomic_compare_exchange_n((uint16_t *)(uintptr_t)addr, &e, (uint16_t)desired, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLong(e);   /* the value found: == expected on success */
}

static PyObject *cmpxchg32(PyObject *self, PyObject *args) {
    unsigned long long addr; unsigned int expected, desired;
    if (!PyArg_ParseTuple(args, "KII", &addr, &expected, &desired)) return NULL;
    uint32_t e = expected;
    __atomic_compare_exchange_n((uint32_t *)(uintptr_t)addr, &e, desired, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLong(e);
}

static PyObject *cmpxchg64(PyObject *self, PyObject *args) {
    unsigned long long addr, expected, desired;
    if (!PyArg_ParseTuple(args, "KKK", &addr, &expected, &desired)) return NULL;
    uint64_t e = expected;
    __atomic_compare_exchange_n((uint64_t *)(uintptr_t)addr, &e, (uint64_t)desired, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLongLong(e);
}

static PyObject *xchg8(PyObject *self, PyObject *args) {
    unsigned long long addr; unsigned int val;
    if (!PyArg_ParseTuple(args, "KI", &addr, &val)) return NULL;
    uint8_t old = __atomic_exchange_n((uint8_t *)(uintptr_t)addr, (uint8_t)val, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLong(old);
}

static PyObject *rdtsc(PyObject *self, PyObject *noargs) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return PyLong_FromUnsignedLongLong(((uint64_t)hi << 32) | lo);
}

static PyObject *store32(PyObject *self, PyObject *args) {
    unsigned long long addr; unsigned int val;
    if (!PyArg_ParseTuple(args, "KI", &addr, &val)) return NULL;
    __atomic_store_n((uint32_t *)(uintptr_t)addr, val, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* the host CPU's own answers (PVM lets guest user space read them natively) */
static PyObject *host_cpuid(PyObject *self, PyObject *args) {
    unsigned int leaf, sub, a, b, c, d;
    if (!PyArg_ParseTuple(args, "II", &leaf, &sub)) return NULL;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    return Py_BuildValue("(IIII)", a, b, c, d);
}

static PyObject *host_xcr0(PyObject *self, PyObject *noargs) {
    unsigned int a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    if (!(c & (1u << 27)))            /* no OSXSAVE: xgetbv would fault */
        return PyLong_FromLong(0);
    __asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
    return PyLong_FromUnsignedLongLong(((uint64_t)d << 32) | a);
}

/* The kick signal (kvm/system.py) has its handler here, in C: a Python
 * handler runs on the main thread only (and only when it can take the GIL),
 * so it could neither be installed by a toolstack thread nor run without
 * taking the GIL from the vCPU threads. A kicker sets the vCPU's
 * immediate_exit byte and then signals its thread: inside KVM_RUN the signal
 * ends it (EINTR), outside the byte ends the next one. While kvm_run() is
 * about to enter KVM_RUN the handler sets the byte too (kick_target, only
 * for the duration of the call: no pointer outlives the vCPU's run page), so
 * a signal sent without it cannot slip in before the ioctl unnoticed. */
static __thread volatile uint8_t *kick_target;

static void on_kick(int sig) {
    volatile uint8_t *p = kick_target;
    (void)sig;
    if (p)
        *p = 1;
}

static PyObject *install_kick_handler(PyObject *self, PyObject *args) {
    int signum;
    if (!PyArg_ParseTuple(args, "i", &signum)) return NULL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_kick;
    sa.sa_flags = SA_RESTART;          /* KVM_RUN still ends with EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(signum, &sa, NULL) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* kvm_run(fd, request, immediate_exit_addr) -> (ret, errno): one KVM_RUN
 * ioctl with the GIL released; one a kick ended leaves immediate_exit clear. */
static PyObject *kvm_run(PyObject *self, PyObject *args) {
    int fd; unsigned long request; unsigned long long ie_addr;
    if (!PyArg_ParseTuple(args, "ikK", &fd, &request, &ie_addr)) return NULL;
    volatile uint8_t *ie = (volatile uint8_t *)(uintptr_t)ie_addr;
    int ret, err = 0;
    kick_target = ie;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    Py_BEGIN_ALLOW_THREADS
    ret = ioctl(fd, request, 0);
    if (ret < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    kick_target = NULL;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (ret < 0 && (err == EINTR || err == EAGAIN))
        *ie = 0;                       /* the kick that ended it is taken */
    return Py_BuildValue("(ii)", ret, err);
}

static PyMethodDef methods[] = {
    {"install_kick_handler", install_kick_handler, METH_VARARGS,
     "install_kick_handler(signum): the kick signal's handler, from any thread"},
    {"kvm_run", kvm_run, METH_VARARGS,
     "kvm_run(fd, KVM_RUN, immediate_exit_addr) -> (ret, errno) of one KVM_RUN"},
    {"rdtsc", rdtsc, METH_NOARGS, "rdtsc() -> the CPU's time-stamp counter (what a PV guest reads)"},
    {"host_cpuid", host_cpuid, METH_VARARGS, "host_cpuid(leaf, sub) -> (eax, ebx, ecx, edx) of this CPU"},
    {"host_xcr0", host_xcr0, METH_NOARGS, "host_xcr0() -> XCR0 in force (0 without OSXSAVE)"},
    {"store32", store32, METH_VARARGS, "store32(addr, value): atomic 32-bit store"},
    {"set_bit", set_bit, METH_VARARGS, "set_bit(addr, bit) -> was set: atomic OR of one bit"},
    {"clear_bit", clear_bit, METH_VARARGS, "clear_bit(addr, bit) -> was set: atomic AND-NOT"},
    {"test_bit", test_bit, METH_VARARGS, "test_bit(addr, bit) -> bool"},
    {"cmpxchg16", cmpxchg16, METH_VARARGS, "cmpxchg16(addr, expected, new) -> value found"},
    {"cmpxchg32", cmpxchg32, METH_VARARGS, "cmpxchg32(addr, expected, new) -> value found"},
    {"cmpxchg64", cmpxchg64, METH_VARARGS, "cmpxchg64(addr, expected, new) -> value found"},
    {"xchg8", xchg8, METH_VARARGS, "xchg8(addr, new) -> old byte"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pyxen._atomic",
    "Atomic operations on shared guest memory.", -1, methods};

PyMODINIT_FUNC PyInit__atomic(void) { return PyModule_Create(&module); }
