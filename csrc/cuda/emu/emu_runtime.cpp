/* The gpuaccel CUDA emulator: CUDA's execution model on the CPU, for tests.
 *
 * Grids: a launch is queued on its stream (deferred: it runs only when the
 * host synchronises, as on the slowest legal GPU). A grid's blocks run on a
 * pool of host threads; a block's threads are fibers on one host thread, each
 * run until it reaches a barrier or a warp collective or exits. When every
 * live thread waits, the barrier (or the warp's collective) is released and
 * the next round starts. GPUACCEL_EMU_SCHEDULE picks the order of threads in
 * each round and of blocks in the grid: forward, reverse or random[:seed], so
 * a missing __syncthreads or an order-dependent result shows.
 *
 * Memory: each device allocation is its own mapping between two guard pages,
 * the data placed against the upper guard, filled with 0xFF bytes (NaN) and
 * kept PROT_NONE except while device work runs: a host dereference of a device
 * pointer faults. Under ASan the slack around each allocation is poisoned.
 * Pinned host memory is ordinary memory that copies read when they run;
 * copies from pageable memory take the data at the call, as CUDA does.
 *
 * Errors follow CUDA: a bad launch configuration is returned by the next
 * cudaGetLastError; a fault detected inside a kernel (a deadlocked barrier, a
 * shuffle with an exited lane) is sticky and names the kernel, block, thread
 * and source line in cudaGetErrorString and on stderr. */
#include "emu_internal.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define GA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GA_EMU_ASAN 1
#endif
#endif
#ifdef GA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace ga_emu {

__thread const ThreadView *current_view = nullptr;

void diagnose(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "gpuaccel CUDA emulator: %s\n", buf);
    fflush(stderr);
}

namespace {

/* ------------------------------------------------------------------ settings */

enum class Order { Forward, Reverse, Random };
struct Schedule {
    Order order = Order::Forward;
    uint64_t seed = 0;
};

bool read_schedule(Schedule *out)
{
    const char *s = getenv("GPUACCEL_EMU_SCHEDULE");
    *out = Schedule{};
    if (!s || !*s || !strcmp(s, "forward"))
        return true;
    if (!strcmp(s, "reverse")) {
        out->order = Order::Reverse;
        return true;
    }
    if (!strncmp(s, "random", 6) && (s[6] == '\0' || s[6] == ':')) {
        out->order = Order::Random;
        if (s[6] == ':') {
            char *end = nullptr;
            out->seed = strtoull(s + 7, &end, 10);
            if (end == s + 7 || *end)
                return false;
        }
        return true;
    }
    return false;
}

/* "4G", "512M", "1000000" -> bytes; `dflt` when unset or unreadable. */
size_t env_bytes(const char *name, size_t dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end = nullptr;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return dflt;
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; break;
    case 'm': case 'M': v *= 1024.0 * 1024.0; break;
    case 'g': case 'G': v *= 1024.0 * 1024.0 * 1024.0; break;
    default: break;
    }
    return (size_t)v;
}

int env_int(const char *name, int dflt, int lo, int hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    long v = strtol(s, nullptr, 10);
    return v < lo ? lo : (v > hi ? hi : (int)v);
}

uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------------ errors */

thread_local cudaError_t tls_last = cudaSuccess;
std::atomic<int> g_sticky{0};
std::mutex g_sticky_mutex;
std::string g_sticky_text; /* cudaGetErrorString of the sticky error */

cudaError_t set_error(cudaError_t e)
{
    if (e != cudaSuccess)
        tls_last = e;
    return e;
}

cudaError_t sticky() { return (cudaError_t)g_sticky.load(); }

/* A fault inside device work: the context is unusable from now on, as on a GPU. */
void fail_sticky(cudaError_t e, const std::string &detail)
{
    std::lock_guard<std::mutex> lock(g_sticky_mutex);
    if (g_sticky.load() != 0)
        return;
    g_sticky_text = std::string(cudaGetErrorString(e)) + " [" + detail + "]";
    g_sticky.store(e);
    diagnose("%s", detail.c_str());
}

/* ------------------------------------------------------------------ fibers */

#if defined(GA_EMU_ASAN)
constexpr size_t kStackBytes = 512 * 1024;
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif

#if defined(__x86_64__)
/* Saves the callee-saved registers on the current stack, stores its pointer in
 * *save and continues on the stack `load`. The FP control words are not
 * switched: device code never changes them. */
extern "C" void ga_emu_swap(void **save, void *load);
extern "C" void ga_emu_fiber_start(void);
asm(".text\n"
    ".p2align 4\n"
    ".globl ga_emu_swap\n"
    ".hidden ga_emu_swap\n"
    ".type ga_emu_swap,@function\n"
    "ga_emu_swap:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size ga_emu_swap, .-ga_emu_swap\n"
    /* first entry of a fiber: r12 = argument, r13 = function (never returns) */
    ".globl ga_emu_fiber_start\n"
    ".hidden ga_emu_fiber_start\n"
    ".type ga_emu_fiber_start,@function\n"
    "ga_emu_fiber_start:\n"
    "  movq %r12, %rdi\n"
    "  callq *%r13\n"
    "  ud2\n"
    ".size ga_emu_fiber_start, .-ga_emu_fiber_start\n");

struct Context {
    void *sp = nullptr;
};
void context_init(Context *c, char *stack, size_t bytes, void (*fn)(void *), void *arg)
{
    uint64_t *sp = (uint64_t *)(((uintptr_t)(stack + bytes)) & ~(uintptr_t)15);
    sp[-1] = (uint64_t)&ga_emu_fiber_start; /* popped by ret */
    sp[-2] = 0;                             /* rbp */
    sp[-3] = 0;                             /* rbx */
    sp[-4] = (uint64_t)arg;                 /* r12 */
    sp[-5] = (uint64_t)fn;                  /* r13 */
    sp[-6] = 0;                             /* r14 */
    sp[-7] = 0;                             /* r15 */
    c->sp = &sp[-7];
}
void context_switch(Context *from, Context *to) { ga_emu_swap(&from->sp, to->sp); }
#else
struct Context {
    ucontext_t uc;
};
void (*g_fiber_fn)(void *);
void fiber_trampoline(unsigned hi, unsigned lo)
{
    void *arg = (void *)(((uintptr_t)hi << 32) | (uintptr_t)lo);
    g_fiber_fn(arg);
}
void context_init(Context *c, char *stack, size_t bytes, void (*fn)(void *), void *arg)
{
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = bytes;
    c->uc.uc_link = nullptr;
    g_fiber_fn = fn;
    uintptr_t a = (uintptr_t)arg;
    makecontext(&c->uc, (void (*)())fiber_trampoline, 2, (unsigned)(a >> 32), (unsigned)a);
}
void context_switch(Context *from, Context *to) { swapcontext(&from->uc, &to->uc); }
#endif

void asan_start(void **fake, const void *bottom, size_t size)
{
#ifdef GA_EMU_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}
void asan_finish(void *fake, const void **bottom_old, size_t *size_old)
{
#ifdef GA_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom_old, size_old);
#else
    (void)fake, (void)bottom_old, (void)size_old;
#endif
}

/* ------------------------------------------------------------------ blocks */

enum class State : uint8_t { Ready, AtBarrier, AtWarp, Done };

struct BlockRun;
struct Worker;

/* A stack to run emulated threads on. A fiber runs the not yet started threads
 * of a round one after the other, in schedule order, with no switch between
 * them; when one blocks (a barrier, a warp collective) the fiber stays with
 * that thread and the scheduler takes another for the threads after it. So a
 * block without barriers costs two switches, not two per thread. */
struct Fiber {
    Context ctx;
    char *stack = nullptr;
    void *asan_fake = nullptr;
    Worker *worker = nullptr;
};

struct ThreadCtx {
    ThreadView view;
    int linear = 0;
    State state = State::Ready;
    Fiber *fiber = nullptr; /* the fiber it is suspended on (null: not started, or done) */
    BlockRun *block = nullptr;
    /* where it waits */
    const char *file = "";
    int line = 0;
    /* its warp collective */
    WarpOp op = WARP_SYNC;
    unsigned mask = 0;
    uint64_t value = 0, result = 0;
    int arg = 0, width = 32;
};

struct BlockRun {
    const Launch *launch = nullptr;
    int nthreads = 0;
    ThreadCtx *threads = nullptr;
    const int *sequence = nullptr; /* this round's order */
    int cursor = 0;                /* next position of the round */
    int done = 0, at_barrier = 0, at_warp = 0;
    bool failed = false;
};

void fiber_main(void *arg);

/* Per host thread: its fibers, the scheduler's own context, the block being run. */
struct Worker {
    Context sched;
    void *sched_fake = nullptr;
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
    BlockRun *block = nullptr;
    ThreadCtx *running = nullptr;
    Fiber *went_idle = nullptr;   /* set by a fiber that has no thread to run */
    std::vector<Fiber *> idle;    /* fibers parked between threads, reused by later blocks */
    std::vector<Fiber *> dirty;   /* fibers abandoned with a thread's frames on them */
    std::vector<Fiber *> all;
    std::vector<ThreadCtx> threads; /* reused between blocks */
    std::vector<int> sequence;

    Fiber *take_fiber()
    {
        Fiber *f = nullptr;
        if (!idle.empty()) {
            f = idle.back();
            idle.pop_back();
            return f;
        }
        if (!dirty.empty()) {
            f = dirty.back();
            dirty.pop_back();
#ifdef GA_EMU_ASAN
            __asan_unpoison_memory_region(f->stack, kStackBytes);
#endif
        } else {
            /* a guard page below each stack: an overflow faults */
            const size_t page = (size_t)sysconf(_SC_PAGESIZE);
            void *m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED)
                return nullptr;
            mprotect(m, page, PROT_NONE);
            f = new Fiber;
            f->stack = (char *)m + page;
            f->worker = this;
            all.push_back(f);
        }
        context_init(&f->ctx, f->stack, kStackBytes, fiber_main, f);
        return f;
    }
    ~Worker()
    {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        for (Fiber *f : all) {
#ifdef GA_EMU_ASAN
            __asan_unpoison_memory_region(f->stack, kStackBytes);
#endif
            munmap(f->stack - page, kStackBytes + page);
            delete f;
        }
    }
};

thread_local Worker tls_worker;

std::string where(const ThreadCtx *t)
{
    char buf[512];
    const ThreadView &v = t->view;
    snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", t->block->launch->name,
             v.block_idx.x, v.block_idx.y, v.block_idx.z, v.thread_idx.x, v.thread_idx.y, v.thread_idx.z);
    return buf;
}

/* From a fiber back to the scheduler of its host thread. */
void to_scheduler(Fiber *f)
{
    Worker *w = f->worker;
    asan_start(&f->asan_fake, w->sched_bottom, w->sched_size);
    context_switch(&f->ctx, &w->sched);
    asan_finish(f->asan_fake, nullptr, nullptr);
}

void fiber_main(void *arg)
{
    Fiber *f = (Fiber *)arg;
    Worker *w = f->worker;
    asan_finish(nullptr, &w->sched_bottom, &w->sched_size);
    const ThreadView **view = &current_view; /* fibers never change host thread */
    for (;;) {
        BlockRun *b = w->block;
        while (b->cursor < b->nthreads) {
            ThreadCtx *t = &b->threads[b->sequence[b->cursor]];
            if (t->state != State::Ready) {
                b->cursor++;
                continue;
            }
            if (t->fiber)
                break; /* a suspended thread is next: the scheduler resumes it */
            b->cursor++;
            t->fiber = f;
            w->running = t;
            *view = &t->view;
            b->launch->body();
            t->state = State::Done;
            t->fiber = nullptr;
            b->done++;
        }
        w->running = nullptr;
        *view = nullptr;
        w->went_idle = f;
        to_scheduler(f);
    }
}

/* From an emulated thread to the scheduler; returns when it is resumed. */
void block_here(ThreadCtx *t) { to_scheduler(t->fiber); }

/* Marks the block failed (sticky error with `what`) and leaves the calling
 * emulated thread for good: its fiber is abandoned with the block. */
[[noreturn]] void abort_thread(ThreadCtx *t, const std::string &what)
{
    fail_sticky(cudaErrorLaunchFailure, where(t) + ": " + what);
    t->block->failed = true;
    t->state = State::Done;
    t->block->done++;
    block_here(t);
    __builtin_unreachable();
}

ThreadCtx *self(const char *what)
{
    ThreadCtx *t = tls_worker.running;
    if (!t)
        diagnose("%s called outside a kernel", what);
    return t;
}

const char *op_name(WarpOp op)
{
    switch (op) {
    case WARP_SYNC: return "__syncwarp";
    case WARP_SHFL_IDX: return "__shfl_sync";
    case WARP_SHFL_UP: return "__shfl_up_sync";
    case WARP_SHFL_DOWN: return "__shfl_down_sync";
    case WARP_SHFL_XOR: return "__shfl_xor_sync";
    case WARP_BALLOT: return "__ballot_sync";
    }
    return "?";
}

/* The lane whose value lane `lane` receives (CUDA's rules for width). */
int shfl_source(WarpOp op, int lane, int arg, int width)
{
    const int seg = lane / width * width;
    switch (op) {
    case WARP_SHFL_IDX: return seg + (arg & (width - 1));
    case WARP_SHFL_UP: return (unsigned)(lane - seg) >= (unsigned)arg ? lane - arg : lane; /* delta is unsigned */
    case WARP_SHFL_DOWN: return (int64_t)(lane - seg) + (unsigned)arg < width ? lane + arg : lane;
    case WARP_SHFL_XOR: {
        const int src = lane ^ arg;
        return src >= seg + width || src > 31 || src < 0 ? lane : src;
    }
    default: return lane;
    }
}

std::string site(const ThreadCtx &t)
{
    return std::string(t.file) + ":" + std::to_string(t.line);
}

/* The lane whose collective keeps lane `t`'s from completing, or null when
 * every non-exited lane of its mask has arrived at the same collective (CUDA
 * asks only the non-exited lanes named in the mask to take part). */
const ThreadCtx *blocker(const BlockRun &b, const ThreadCtx &t)
{
    const int base = t.linear / 32 * 32, lanes = std::min(32, b.nthreads - base);
    for (int j = 0; j < lanes; j++) {
        const ThreadCtx &u = b.threads[base + j];
        if ((t.mask >> j & 1u) && u.state != State::Done &&
            (u.state != State::AtWarp || u.mask != t.mask || u.op != t.op))
            return &u;
    }
    return nullptr;
}

/* Release every warp collective whose lanes have all arrived. Returns whether
 * one was released; sets `error` when one reads a lane it cannot. */
bool release_warps(BlockRun &b, std::string *error)
{
    bool released = false;
    for (int base = 0; base < b.nthreads; base += 32) {
        const int lanes = std::min(32, b.nthreads - base);
        unsigned done_lanes = 0;
        for (int l = 0; l < lanes; l++) {
            ThreadCtx &t = b.threads[base + l];
            if (t.state != State::AtWarp || (done_lanes >> l & 1u) || blocker(b, t))
                continue;
            const unsigned m = t.mask;
            unsigned group = 0; /* the lanes taking part: named in the mask, not exited */
            uint64_t ballot = 0;
            for (int j = 0; j < lanes; j++)
                if ((m >> j & 1u) && b.threads[base + j].state != State::Done) {
                    group |= 1u << j;
                    if (b.threads[base + j].value)
                        ballot |= 1ull << j;
                }
            for (int j = 0; j < lanes; j++) {
                if (!(group >> j & 1u))
                    continue;
                ThreadCtx &u = b.threads[base + j];
                if (u.op == WARP_BALLOT) {
                    u.result = ballot;
                } else if (u.op != WARP_SYNC) {
                    if (u.width < 1 || u.width > 32 || (u.width & (u.width - 1))) {
                        *error = where(&u) + ": " + op_name(u.op) + " at " + site(u) + ": width " +
                                 std::to_string(u.width) + " is not a power of 2 in [1, 32]";
                        return false;
                    }
                    const int src = shfl_source(u.op, j, u.arg, u.width);
                    if (!(group >> src & 1u)) {
                        const char *why = src >= lanes ? "which does not exist"
                                          : !(m >> src & 1u) ? "which is not in its mask"
                                                             : "which has exited";
                        *error = where(&u) + ": " + op_name(u.op) + " at " + site(u) + " reads lane " +
                                 std::to_string(src) + ", " + why + " (undefined on a GPU)";
                        return false;
                    }
                    u.result = b.threads[base + src].value;
                }
                u.state = State::Ready;
                b.at_warp--;
                done_lanes |= 1u << j;
            }
            released = true;
        }
    }
    return released;
}

/* Run one block to completion under the schedule. */
void run_block(const Launch &L, uint3 bidx, Order order, uint64_t seed)
{
    Worker &w = tls_worker;
    const int n = (int)(L.block.x * L.block.y * L.block.z);
    if ((int)w.threads.size() < n) {
        w.threads.resize(n);
        w.sequence.resize(n);
    }
    BlockRun b;
    b.launch = &L;
    b.nthreads = n;
    b.threads = w.threads.data();
    b.sequence = w.sequence.data();
    w.block = &b;
    for (int i = 0; i < n; i++) {
        ThreadCtx &t = b.threads[i];
        t.view.thread_idx = uint3{(unsigned)i % L.block.x, (unsigned)i / L.block.x % L.block.y,
                                  (unsigned)i / (L.block.x * L.block.y)};
        t.view.block_idx = bidx;
        t.view.block_dim = L.block;
        t.view.grid_dim = L.grid;
        t.linear = i;
        t.state = State::Ready;
        t.fiber = nullptr;
        t.block = &b;
        w.sequence[i] = order == Order::Reverse ? n - 1 - i : i;
    }
    uint64_t rng = mix64(seed);
    std::string error;
    for (;;) {
        if (order == Order::Random) /* a new order every round */
            for (int i = n - 1; i > 0; i--) {
                rng = mix64(rng);
                std::swap(w.sequence[i], w.sequence[rng % (uint64_t)(i + 1)]);
            }
        b.cursor = 0;
        while (b.cursor < n) {
            ThreadCtx *t = &b.threads[b.sequence[b.cursor]];
            if (t->state != State::Ready) {
                b.cursor++;
                continue;
            }
            Fiber *f;
            if (t->fiber) { /* resume a suspended thread */
                b.cursor++;
                f = t->fiber;
                w.running = t;
                current_view = &t->view;
            } else if (!(f = w.take_fiber())) { /* a fiber for the threads from here on */
                error = where(t) + ": no memory for an emulated thread's stack";
                goto out;
            }
            w.went_idle = nullptr;
            asan_start(&w.sched_fake, f->stack, kStackBytes);
            context_switch(&w.sched, &f->ctx);
            asan_finish(w.sched_fake, nullptr, nullptr);
            current_view = nullptr;
            w.running = nullptr;
            if (w.went_idle)
                w.idle.push_back(w.went_idle);
            if (b.failed)
                goto out;
        }
        const int live = n - b.done;
        if (live == 0)
            break;
        if (b.at_warp > 0 && release_warps(b, &error))
            continue;
        if (!error.empty())
            goto out;
        const ThreadCtx *first = nullptr;
        for (int i = 0; i < n && !first && b.at_barrier > 0; i++)
            if (b.threads[i].state == State::AtBarrier)
                first = &b.threads[i];
        if (b.at_barrier == live) {
            /* exited threads count as arrived, as on the hardware */
            for (int i = 0; i < n; i++) {
                ThreadCtx &t = b.threads[i];
                if (t.state != State::AtBarrier)
                    continue;
                if (t.line != first->line || strcmp(t.file, first->file) != 0) {
                    const std::string other = where(first);
                    error = where(&t) + " waits at __syncthreads " + site(t) + " while " +
                            other.substr(other.find("thread (")) + " waits at " + site(*first) +
                            " (divergent barrier: a hang or undefined on a GPU)";
                    goto out;
                }
            }
            for (int i = 0; i < n; i++)
                if (b.threads[i].state == State::AtBarrier)
                    b.threads[i].state = State::Ready;
            b.at_barrier = 0;
            continue;
        }
        /* every live thread waits and none can go on: a GPU would hang */
        for (int i = 0; i < n; i++) {
            const ThreadCtx &t = b.threads[i];
            const ThreadCtx *u = t.state == State::AtWarp ? blocker(b, t) : nullptr;
            if (!u)
                continue;
            error = where(&t) + " waits in " + op_name(t.op) + " at " + site(t) + " for lane " +
                    std::to_string(u->linear % 32) +
                    (u->state == State::AtBarrier
                         ? ", which waits at __syncthreads " + site(*u)
                         : std::string(", which waits in ") + op_name(u->op) + " at " + site(*u) +
                               " with mask " + std::to_string(u->mask) + " (lanes of one warp disagree)") +
                    ": deadlock";
            break;
        }
        goto out;
    }
out:
    if (!error.empty()) {
        fail_sticky(cudaErrorLaunchFailure, error);
        b.failed = true;
    }
    for (int i = 0; i < n; i++) {
        ThreadCtx &t = b.threads[i];
        if (t.fiber) /* abandoned mid-run: its frames are never unwound */
            w.dirty.push_back(t.fiber);
        t.fiber = nullptr;
    }
    w.block = nullptr;
}

/* ------------------------------------------------------------------ worker pool */

class Pool {
  public:
    explicit Pool(int threads) : owner_(getpid())
    {
        for (int i = 0; i < threads; i++)
            std::thread([this] { loop(); }).detach();
        helpers_ = threads;
    }
    pid_t owner() const { return owner_; }
    int size() const { return helpers_ + 1; }

    /* fn(i) for every i in [0, n): the calling thread works too. */
    void run(int64_t n, const std::function<void(int64_t)> &fn)
    {
        std::unique_lock<std::mutex> lock(m_);
        job_ = &fn;
        total_ = n;
        next_.store(0);
        busy_ = helpers_;
        generation_++;
        cv_.notify_all();
        lock.unlock();
        work();
        lock.lock();
        done_.wait(lock, [this] { return busy_ == 0; });
        job_ = nullptr;
    }

  private:
    void work()
    {
        for (int64_t i; (i = next_.fetch_add(1)) < total_;)
            (*job_)(i);
    }
    void loop()
    {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            cv_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            lock.unlock();
            work();
            lock.lock();
            if (--busy_ == 0)
                done_.notify_all();
        }
    }
    std::mutex m_;
    std::condition_variable cv_, done_;
    const std::function<void(int64_t)> *job_ = nullptr;
    std::atomic<int64_t> next_{0};
    int64_t total_ = 0;
    int busy_ = 0, helpers_ = 0;
    uint64_t generation_ = 0;
    pid_t owner_;
};

std::mutex g_pool_mutex;
Pool *g_pool = nullptr; /* never destroyed: its threads outlive static destructors */

Pool &pool()
{
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    if (!g_pool || g_pool->owner() != getpid()) { /* a forked child has no helper threads */
        unsigned hw = std::thread::hardware_concurrency();
        int n = env_int("GPUACCEL_EMU_WORKERS", (int)std::min(hw ? hw : 1u, 8u), 1, 256);
        g_pool = new Pool(n - 1);
    }
    return *g_pool;
}

std::atomic<uint64_t> g_launch_seq{0};

void run_grid(const Launch &L, Schedule sch, uint64_t seq)
{
    const uint64_t gx = L.grid.x, gy = L.grid.y, nblocks = gx * gy * L.grid.z;
    /* random order: a shuffled list up to 2^24 blocks; beyond, an affine bijection
     * i -> (i * P + c) mod nblocks (P prime, not dividing nblocks), which needs no memory */
    std::vector<uint32_t> perm;
    uint64_t prime = 4294967291ull, offset = 0;
    if (sch.order == Order::Random) {
        uint64_t rng = mix64(sch.seed * 0x9E3779B97F4A7C15ull + seq);
        if (nblocks <= (1u << 24)) {
            perm.resize(nblocks);
            for (uint64_t i = 0; i < nblocks; i++)
                perm[i] = (uint32_t)i;
            for (uint64_t i = nblocks - 1; i > 0; i--) {
                rng = mix64(rng);
                std::swap(perm[i], perm[rng % (i + 1)]);
            }
        } else {
            if (nblocks % prime == 0)
                prime = 4294967279ull;
            offset = mix64(rng) % nblocks;
        }
    }
    std::function<void(int64_t)> one = [&](int64_t i) {
        if (sticky() != cudaSuccess)
            return;
        uint64_t id = sch.order == Order::Forward   ? (uint64_t)i
                      : sch.order == Order::Reverse ? nblocks - 1 - (uint64_t)i
                      : !perm.empty()               ? perm[i]
                          : (uint64_t)(((unsigned __int128)(uint64_t)i * prime + offset) % nblocks);
        uint3 b{(unsigned)(id % gx), (unsigned)(id / gx % gy), (unsigned)(id / (gx * gy))};
        run_block(L, b, sch.order, mix64(sch.seed ^ mix64(seq)) ^ id);
    };
    Pool &p = pool();
    if (nblocks == 1 || p.size() == 1) {
        for (uint64_t i = 0; i < nblocks; i++)
            one((int64_t)i);
    } else {
        p.run((int64_t)nblocks, one);
    }
}

/* ------------------------------------------------------------------ devices, memory, queues */

constexpr size_t kMaxShared = 48 * 1024;
constexpr const char *kDeviceName = "gpuaccel CUDA emulator (CPU, not a GPU)";

struct Allocation {
    char *map = nullptr;
    size_t map_bytes = 0;
    size_t bytes = 0;
    int device = 0;
    bool freeing = false; /* cudaFreeAsync queued: no longer usable by new work */
};

struct Op {
    uint64_t stream_id;
    uint64_t seq;
    std::function<void()> run;
};

struct Device {
    size_t used = 0;
    std::deque<Op> queue;
    uint64_t queued = 0;         /* sequence number of the last op queued */
    uint64_t running_stream = 0; /* the stream of the op running now (0: none) */
    int capturing = 0;           /* streams of this device recording a graph */
};

} // namespace
} // namespace ga_emu

struct CUgraph_st {
    int device = 0;
    std::vector<std::function<void()>> ops; /* in the order they were queued */
    bool invalidated = false;               /* an unsupported call happened during capture */
};
struct CUgraphExec_st {
    int device = 0;
    std::vector<std::function<void()>> ops;
};

struct CUstream_st {
    int device;
    unsigned flags;
    uint64_t id;
    int polls = 0;                /* queries in a row that found work pending */
    CUgraph_st *capture = nullptr; /* recording into this graph (begin to end capture) */
};
struct CUevent_st {
    int device = 0;
    unsigned flags = 0;
    bool recorded = false;
    bool done = false;
    double seconds = 0.0;
    int polls = 0;
};

namespace ga_emu {
namespace {

std::mutex g_api;  /* registries, queues, memory accounting */
std::mutex g_exec; /* one drain at a time */
std::vector<Device> g_devices;
std::vector<std::unique_ptr<CUstream_st>> g_default_streams; /* the legacy stream of each device */
std::map<uintptr_t, Allocation> g_allocs; /* by data pointer */
std::map<uintptr_t, size_t> g_pinned;
std::set<cudaStream_t> g_streams;
std::set<cudaEvent_t> g_events;
int g_window = 0; /* > 0 while device work runs: device memory readable */
uint64_t g_stream_ids = 0;
thread_local int tls_device = 0;
size_t g_page = 0;

void install_fault_diagnosis();

/* Under g_api. */
void init_locked()
{
    if (!g_devices.empty())
        return;
    install_fault_diagnosis();
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    const int n = env_int("GPUACCEL_EMU_DEVICES", 1, 1, 64);
    g_devices.resize(n);
    for (int d = 0; d < n; d++)
        g_default_streams.emplace_back(new CUstream_st{d, cudaStreamDefault, ++g_stream_ids, 0});
}
void init()
{
    std::lock_guard<std::mutex> lock(g_api);
    init_locked();
}
int device_count()
{
    init();
    return (int)g_devices.size();
}

size_t memory_limit() { return env_bytes("GPUACCEL_EMU_MEMORY", (size_t)4 << 30); }
int sm_count() { return env_int("GPUACCEL_EMU_SMS", 132, 1, 1 << 20); }
/* The compute capability reported, 10 * major + minor: an H200's 9.0 unless
 * GPUACCEL_EMU_CC (e.g. 75 for sm_75) says otherwise, so the refusals of
 * features an older GPU lacks (tf32 tensor cores need 8.0) can be tested. */
int compute_capability() { return env_int("GPUACCEL_EMU_CC", 90, 10, 199); }

void protect(const Allocation &a, bool readable)
{
    mprotect(a.map + g_page, a.map_bytes - 2 * g_page, readable ? PROT_READ | PROT_WRITE : PROT_NONE);
}

/* Device memory readable for the lifetime of this object (under g_exec). */
struct Window {
    Window()
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (g_window++ == 0)
            for (auto &kv : g_allocs)
                protect(kv.second, true);
    }
    ~Window()
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (--g_window == 0)
            for (auto &kv : g_allocs)
                protect(kv.second, false);
    }
};

/* The allocation whose mapping (guard pages included) holds address a, or end
 * (under g_api): the one with the largest data pointer <= a, or the next one up,
 * whose lower guard and slack lie below its data. */
std::map<uintptr_t, Allocation>::iterator mapping_locked(uintptr_t a)
{
    auto next = g_allocs.upper_bound(a);
    if (next != g_allocs.end() && a >= (uintptr_t)next->second.map)
        return next;
    if (next == g_allocs.begin())
        return g_allocs.end();
    auto it = std::prev(next);
    return a < (uintptr_t)it->second.map + it->second.map_bytes ? it : g_allocs.end();
}
/* The usable allocation holding [p, p + bytes), or null (under g_api). */
const Allocation *find_locked(const void *p, size_t bytes)
{
    auto it = mapping_locked((uintptr_t)p);
    if (it == g_allocs.end() || it->second.freeing)
        return nullptr;
    const uintptr_t lo = it->first, hi = lo + it->second.bytes;
    if ((uintptr_t)p < lo || (uintptr_t)p >= hi + (bytes == 0) || bytes > hi - (uintptr_t)p)
        return nullptr;
    return &it->second;
}
/* Does p point into any device mapping, even out of bounds? */
bool touches_device_locked(const void *p) { return mapping_locked((uintptr_t)p) != g_allocs.end(); }
bool pinned_locked(const void *p, size_t bytes)
{
    auto it = g_pinned.upper_bound((uintptr_t)p);
    if (it == g_pinned.begin())
        return false;
    --it;
    return (uintptr_t)p >= it->first && (uintptr_t)p + bytes <= it->first + it->second;
}

/* A fault on a device mapping says what it was before the process dies as it
 * would have anyway: the handler then restores the previous one (Python's
 * faulthandler, ASan's, or the default) and returns, so the access faults again
 * and that one runs. */
struct sigaction g_previous_segv;

void fault_diagnosis(int sig, siginfo_t *info, void *uctx)
{
    const uintptr_t a = (uintptr_t)info->si_addr;
    char msg[400];
    int len = 0;
    if (g_api.try_lock()) { /* held by this thread: no details rather than a deadlock */
        auto it = mapping_locked(a);
        if (it != g_allocs.end()) {
            const Allocation &al = it->second;
            const uintptr_t data = it->first;
            if (a >= (uintptr_t)al.map && a < (uintptr_t)al.map + al.map_bytes) {
                if (g_window == 0 && a >= data && a < data + al.bytes)
                    len = snprintf(msg, sizeof msg,
                                   "gpuaccel CUDA emulator: host code read or wrote device memory at %p "
                                   "(byte %zu of a %zu-byte cudaMalloc block) outside device work: a device "
                                   "pointer is not host memory, copy with cudaMemcpy\n",
                                   (void *)a, (size_t)(a - data), al.bytes);
                else if (a >= data)
                    len = snprintf(msg, sizeof msg,
                                   "gpuaccel CUDA emulator: access at %p, %zu bytes past the end of a %zu-byte "
                                   "device allocation (out of bounds)\n",
                                   (void *)a, (size_t)(a - data - al.bytes), al.bytes);
                else
                    len = snprintf(msg, sizeof msg,
                                   "gpuaccel CUDA emulator: access at %p, %zu bytes before a %zu-byte device "
                                   "allocation (out of bounds)\n",
                                   (void *)a, (size_t)(data - a), al.bytes);
            }
        }
        g_api.unlock();
    }
    if (len > 0 && write(2, msg, (size_t)len) < 0) {
    }
    sigaction(SIGSEGV, &g_previous_segv, nullptr);
    (void)sig, (void)uctx;
}

/* Under g_api, once. */
void install_fault_diagnosis()
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_diagnosis;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous_segv);
}

bool refuse_in_capture_locked(int device);

cudaError_t device_alloc(void **out, size_t bytes, int device)
{
    if (!out)
        return set_error(cudaErrorInvalidValue);
    *out = nullptr;
    if (sticky())
        return set_error(sticky());
    if (bytes == 0)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_api);
    init_locked();
    if (refuse_in_capture_locked(device))
        return set_error(cudaErrorStreamCaptureUnsupported);
    Device &dev = g_devices[device];
    const size_t rounded = (bytes + 255) & ~(size_t)255;
    if (rounded < bytes || rounded > memory_limit() || dev.used > memory_limit() - rounded)
        return set_error(cudaErrorMemoryAllocation);
    const size_t data = (rounded + g_page - 1) / g_page * g_page;
    const size_t total = data + 2 * g_page;
    char *map = (char *)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
        return set_error(cudaErrorMemoryAllocation);
    mprotect(map, g_page, PROT_NONE);
    mprotect(map + g_page + data, g_page, PROT_NONE);
    char *p = map + g_page + data - rounded; /* 256-aligned, against the upper guard */
#ifdef GA_EMU_ASAN
    __asan_unpoison_memory_region(map, total);
    __asan_poison_memory_region(map + g_page, (size_t)(p - (map + g_page)));
    __asan_poison_memory_region(p + bytes, rounded - bytes);
#endif
    memset(p, 0xFF, bytes); /* NaN in every float: reads of unwritten memory show */
    Allocation a;
    a.map = map;
    a.map_bytes = total;
    a.bytes = bytes;
    a.device = device;
    if (g_window == 0)
        protect(a, false);
    dev.used += rounded;
    g_allocs[(uintptr_t)p] = a;
    *out = p;
    return cudaSuccess;
}

/* Under g_api. */
void release_locked(std::map<uintptr_t, Allocation>::iterator it)
{
    Allocation &a = it->second;
    g_devices[a.device].used -= (a.bytes + 255) & ~(size_t)255;
#ifdef GA_EMU_ASAN
    __asan_unpoison_memory_region(a.map, a.map_bytes); /* the addresses may serve the host next */
#endif
    munmap(a.map, a.map_bytes);
    g_allocs.erase(it);
}

/* Run the work of `device` queued up to now (not what other host threads queue
 * meanwhile). Returns the sticky error if device work failed. */
cudaError_t drain(int device)
{
    Device &dev = g_devices[device];
    uint64_t upto;
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (refuse_in_capture_locked(device))
            return cudaErrorStreamCaptureUnsupported;
        upto = dev.queued;
    }
    std::lock_guard<std::mutex> exec(g_exec);
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (dev.queue.empty() || dev.queue.front().seq > upto)
            return sticky();
    }
    Window window;
    for (;;) {
        Op op;
        {
            std::lock_guard<std::mutex> lock(g_api);
            if (dev.queue.empty() || dev.queue.front().seq > upto)
                break;
            op = std::move(dev.queue.front());
            dev.queue.pop_front();
            dev.running_stream = op.stream_id;
        }
        if (sticky() == cudaSuccess)
            op.run(); /* after a fault the device runs nothing more, as a GPU context */
        std::lock_guard<std::mutex> lock(g_api);
        dev.running_stream = 0;
    }
    return sticky();
}

/* Is work of stream `id` queued or running on its device? (under g_api) */
bool pending_locked(const Device &dev, uint64_t id)
{
    if (dev.running_stream == id)
        return true;
    for (const Op &op : dev.queue)
        if (op.stream_id == id)
            return true;
    return false;
}

/* The stream to use (NULL: the device's legacy default stream), or null if invalid. */
cudaStream_t resolve_locked(cudaStream_t s)
{
    init_locked();
    if (s == nullptr)
        return g_default_streams[tls_device].get();
    return g_streams.count(s) ? s : nullptr;
}

/* Under g_api: while a stream of `device` captures, calls that would allocate,
 * synchronise or take pageable host memory fail and spoil the capture. */
bool refuse_in_capture_locked(int device)
{
    if (device < 0 || device >= (int)g_devices.size() || g_devices[device].capturing == 0)
        return false;
    for (cudaStream_t st : g_streams)
        if (st->device == device && st->capture)
            st->capture->invalidated = true;
    diagnose("a call that allocates, synchronises or copies pageable memory was made while a stream of "
             "device %d records a graph",
             device);
    return true;
}

/* Under g_api; st is a resolved stream. A capturing stream records the work. */
void push_locked(cudaStream_t st, std::function<void()> run)
{
    if (st->capture) {
        st->capture->ops.push_back(std::move(run));
        return;
    }
    Device &dev = g_devices[st->device];
    dev.queue.push_back(Op{st->id, ++dev.queued, std::move(run)});
}

cudaError_t enqueue_op(cudaStream_t s, std::function<void()> run)
{
    std::lock_guard<std::mutex> lock(g_api);
    cudaStream_t st = resolve_locked(s);
    if (!st)
        return cudaErrorInvalidResourceHandle;
    push_locked(st, std::move(run));
    return cudaSuccess;
}

double now_seconds()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

} // namespace

/* ------------------------------------------------------------------ device-side entry points */

void syncthreads(const char *file, int line)
{
    ThreadCtx *t = self("__syncthreads");
    if (!t)
        return;
    t->state = State::AtBarrier;
    t->file = file;
    t->line = line;
    t->block->at_barrier++;
    block_here(t);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char *file, int line)
{
    ThreadCtx *t = self(op_name(op));
    if (!t)
        return value;
    t->file = file;
    t->line = line;
    if (!(mask >> (t->linear % 32) & 1u))
        abort_thread(t, std::string(op_name(op)) + " at " + site(*t) + ": the calling lane is not in its mask");
    t->op = op;
    t->mask = mask;
    t->value = value;
    t->arg = arg;
    t->width = width;
    t->state = State::AtWarp;
    t->block->at_warp++;
    block_here(t);
    return t->result;
}

void kernel_fault(const char *what, const char *file, int line)
{
    ThreadCtx *t = self(what);
    if (!t)
        return;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s (%s:%d)", what, file, line);
    abort_thread(t, buf);
}

unsigned active_mask(void)
{
    ThreadCtx *t = self("__activemask");
    if (!t)
        return 0;
    BlockRun &b = *t->block;
    const int base = t->linear / 32 * 32;
    unsigned m = 0;
    for (int j = 0; j < 32 && base + j < b.nthreads; j++)
        if (b.threads[base + j].state != State::Done)
            m |= 1u << j;
    return m;
}

void submit(Launch &&launch)
{
    if (sticky()) {
        set_error(sticky());
        return;
    }
    const dim3 g = launch.grid, bl = launch.block;
    const uint64_t threads = (uint64_t)bl.x * bl.y * bl.z;
    if (!g.x || !g.y || !g.z || !bl.x || !bl.y || !bl.z || bl.x > 1024 || bl.y > 1024 || bl.z > 64 ||
        threads > 1024 || g.x > (unsigned)INT_MAX || g.y > 65535 || g.z > 65535) {
        set_error(cudaErrorInvalidConfiguration);
        return;
    }
    if (launch.shared_bytes > kMaxShared) {
        set_error(cudaErrorInvalidValue);
        return;
    }
    Schedule sch;
    if (!read_schedule(&sch)) {
        diagnose("GPUACCEL_EMU_SCHEDULE=%s: expected forward, reverse or random[:seed]",
                 getenv("GPUACCEL_EMU_SCHEDULE"));
        set_error(cudaErrorInvalidValue);
        return;
    }
    const uint64_t seq = g_launch_seq.fetch_add(1);
    auto L = std::make_shared<Launch>(std::move(launch));
    cudaError_t e = enqueue_op(L->stream, [L, sch, seq]() { run_grid(*L, sch, seq); });
    if (e != cudaSuccess)
        set_error(e);
}

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work)
{
    if (sticky())
        return set_error(sticky());
    return set_error(enqueue_op(stream, std::move(work)));
}

bool is_device_range(const void *p, size_t bytes)
{
    std::lock_guard<std::mutex> lock(g_api);
    return find_locked(p, bytes) != nullptr;
}

void parallel_for(int64_t n, const std::function<void(int64_t)> &fn)
{
    if (n <= 0)
        return;
    Pool &p = pool();
    if (n == 1 || p.size() == 1) {
        for (int64_t i = 0; i < n; i++)
            fn(i);
        return;
    }
    p.run(n, fn);
}

} // namespace ga_emu

/* ------------------------------------------------------------------ the runtime API */

using namespace ga_emu;

extern "C" {

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
#define NAME(x) case x: return #x;
    NAME(cudaSuccess) NAME(cudaErrorInvalidValue) NAME(cudaErrorMemoryAllocation)
    NAME(cudaErrorInitializationError) NAME(cudaErrorInvalidConfiguration)
    NAME(cudaErrorInvalidMemcpyDirection) NAME(cudaErrorInsufficientDriver) NAME(cudaErrorNoDevice)
    NAME(cudaErrorInvalidDevice) NAME(cudaErrorInvalidResourceHandle) NAME(cudaErrorNotReady)
    NAME(cudaErrorIllegalAddress) NAME(cudaErrorLaunchOutOfResources) NAME(cudaErrorLaunchTimeout)
    NAME(cudaErrorAssert) NAME(cudaErrorHardwareStackError) NAME(cudaErrorIllegalInstruction)
    NAME(cudaErrorMisalignedAddress) NAME(cudaErrorInvalidAddressSpace) NAME(cudaErrorInvalidPc)
    NAME(cudaErrorLaunchFailure) NAME(cudaErrorNotSupported) NAME(cudaErrorUnknown)
    NAME(cudaErrorIllegalState) NAME(cudaErrorStreamCaptureUnsupported)
    NAME(cudaErrorStreamCaptureInvalidated) NAME(cudaErrorStreamCaptureUnmatched)
    NAME(cudaErrorStreamCaptureWrongThread)
#undef NAME
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e)
{
    if (e != cudaSuccess && e == sticky()) {
        std::lock_guard<std::mutex> lock(g_sticky_mutex);
        return g_sticky_text.c_str(); /* fixed once set */
    }
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorIllegalState: return "the operation is not permitted in the current state";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchTimeout: return "the launch timed out and was terminated";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error";
    }
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = sticky() ? sticky() : tls_last;
    tls_last = sticky(); /* a sticky error is never cleared */
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return sticky() ? sticky() : tls_last; }

} /* extern "C" */

namespace {
/* *out = value, as the runtime's getters do (a NULL out is an invalid value). */
cudaError_t answer(int *out, int value)
{
    if (!out)
        return set_error(cudaErrorInvalidValue);
    *out = value;
    return cudaSuccess;
}
} // namespace

extern "C" {

cudaError_t cudaDriverGetVersion(int *v) { return answer(v, CUDART_VERSION); }
cudaError_t cudaRuntimeGetVersion(int *v) { return answer(v, CUDART_VERSION); }
cudaError_t cudaGetDeviceCount(int *count) { return answer(count, device_count()); }
cudaError_t cudaGetDevice(int *device) { return answer(device, tls_device); }

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= device_count())
        return set_error(cudaErrorInvalidDevice);
    tls_device = device;
    return sticky() ? set_error(sticky()) : cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    if (!value)
        return set_error(cudaErrorInvalidValue);
    if (device < 0 || device >= device_count())
        return set_error(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = INT_MAX; break;
    case cudaDevAttrMaxGridDimY: case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)kMaxShared; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = sm_count(); break;
    case cudaDevAttrComputeCapabilityMajor: *value = compute_capability() / 10; break;
    case cudaDevAttrComputeCapabilityMinor: *value = compute_capability() % 10; break;
    /* no clocks, bus or cache to speak of */
    case cudaDevAttrClockRate: case cudaDevAttrMemoryClockRate: case cudaDevAttrGlobalMemoryBusWidth:
    case cudaDevAttrL2CacheSize: *value = 0; break;
    default: return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (!p)
        return set_error(cudaErrorInvalidValue);
    if (device < 0 || device >= device_count())
        return set_error(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", kDeviceName);
    p->totalGlobalMem = memory_limit();
    p->sharedMemPerBlock = kMaxShared;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = INT_MAX;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->major = compute_capability() / 10;
    p->minor = compute_capability() % 10;
    p->multiProcessorCount = sm_count();
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    if (!free_bytes || !total_bytes)
        return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_api);
    init_locked();
    const size_t limit = memory_limit(), used = g_devices[tls_device].used;
    *total_bytes = limit;
    *free_bytes = used < limit ? limit - used : 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    init();
    return set_error(drain(tls_device));
}

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    init();
    return device_alloc(ptr, bytes, tls_device);
}

cudaError_t cudaMallocAsync(void **ptr, size_t bytes, cudaStream_t stream)
{
    int device;
    {
        std::lock_guard<std::mutex> lock(g_api);
        cudaStream_t st = resolve_locked(stream);
        if (!st)
            return set_error(cudaErrorInvalidResourceHandle);
        device = st->device;
    }
    return device_alloc(ptr, bytes, device);
}

cudaError_t cudaFree(void *ptr)
{
    if (!ptr)
        return cudaSuccess;
    int device;
    {
        std::lock_guard<std::mutex> lock(g_api);
        auto it = g_allocs.find((uintptr_t)ptr);
        if (it == g_allocs.end() || it->second.freeing)
            return set_error(cudaErrorInvalidValue);
        device = it->second.device;
    }
    cudaError_t e = drain(device); /* cudaFree waits for the device */
    std::lock_guard<std::mutex> lock(g_api);
    auto it = g_allocs.find((uintptr_t)ptr);
    if (it != g_allocs.end())
        release_locked(it);
    return set_error(e);
}

cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream)
{
    if (!ptr)
        return cudaSuccess;
    if (sticky())
        return set_error(sticky());
    std::lock_guard<std::mutex> lock(g_api);
    cudaStream_t st = resolve_locked(stream);
    if (!st)
        return set_error(cudaErrorInvalidResourceHandle);
    auto it = g_allocs.find((uintptr_t)ptr);
    if (it == g_allocs.end() || it->second.freeing) /* unknown, or freed already */
        return set_error(cudaErrorInvalidValue);
    it->second.freeing = true; /* later calls refuse it; queued work still uses it */
    push_locked(st, [ptr]() {
        std::lock_guard<std::mutex> lock(g_api);
        auto it = g_allocs.find((uintptr_t)ptr);
        if (it != g_allocs.end())
            release_locked(it);
    });
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned int flags)
{
    if (!ptr)
        return set_error(cudaErrorInvalidValue);
    *ptr = nullptr;
    if (flags != cudaHostAllocDefault)
        return set_error(cudaErrorNotSupported);
    if (sticky())
        return set_error(sticky());
    if (bytes == 0)
        return cudaSuccess;
    void *p = nullptr;
    if (posix_memalign(&p, 4096, bytes) != 0)
        return set_error(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lock(g_api);
    g_pinned[(uintptr_t)p] = bytes;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes) { return cudaHostAlloc(ptr, bytes, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void *ptr)
{
    if (!ptr)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (!g_pinned.count((uintptr_t)ptr))
            return set_error(cudaErrorInvalidValue);
    }
    cudaError_t e = cudaSuccess;
    for (int d = 0; d < device_count(); d++) /* waits for copies that may read it */
        if (drain(d) != cudaSuccess)
            e = sticky();
    {
        std::lock_guard<std::mutex> lock(g_api);
        g_pinned.erase((uintptr_t)ptr);
    }
    free(ptr);
    return set_error(e);
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream)
{
    if (bytes == 0)
        return sticky() ? set_error(sticky()) : cudaSuccess;
    if (!is_device_range(ptr, bytes))
        return set_error(cudaErrorInvalidValue);
    return enqueue(stream, [ptr, value, bytes]() { memset(ptr, value, bytes); });
}

cudaError_t cudaMemset(void *ptr, int value, size_t bytes)
{
    cudaError_t e = cudaMemsetAsync(ptr, value, bytes, nullptr);
    return e != cudaSuccess ? e : cudaDeviceSynchronize();
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    if (sticky())
        return set_error(sticky());
    if (bytes == 0)
        return cudaSuccess;
    if (!dst || !src)
        return set_error(cudaErrorInvalidValue);
    bool dst_dev, src_dev, dst_any, src_any, dst_pinned, src_pinned;
    int device;
    {
        std::lock_guard<std::mutex> lock(g_api);
        cudaStream_t st = resolve_locked(stream);
        if (!st)
            return set_error(cudaErrorInvalidResourceHandle);
        device = st->device;
        dst_dev = find_locked(dst, bytes) != nullptr;
        src_dev = find_locked(src, bytes) != nullptr;
        dst_any = touches_device_locked(dst);
        src_any = touches_device_locked(src);
        dst_pinned = pinned_locked(dst, bytes);
        src_pinned = pinned_locked(src, bytes);
    }
    if ((dst_any && !dst_dev) || (src_any && !src_dev))
        return set_error(cudaErrorInvalidValue); /* overruns a device allocation */
    if (kind == cudaMemcpyDefault)
        kind = src_dev ? (dst_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                       : (dst_dev ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
    const bool ok = kind == cudaMemcpyHostToDevice   ? dst_dev && !src_dev
                    : kind == cudaMemcpyDeviceToHost ? src_dev && !dst_dev
                    : kind == cudaMemcpyDeviceToDevice ? src_dev && dst_dev
                    : kind == cudaMemcpyHostToHost     ? !src_dev && !dst_dev
                                                       : false;
    if (!ok)
        return set_error(kind > cudaMemcpyDefault ? cudaErrorInvalidMemcpyDirection : cudaErrorInvalidValue);
    {
        std::lock_guard<std::mutex> lock(g_api);
        cudaStream_t st = resolve_locked(stream);
        if (st && st->capture && (!src_pinned && !src_dev) | (!dst_pinned && !dst_dev) &&
            refuse_in_capture_locked(device))
            return set_error(cudaErrorStreamCaptureUnsupported);
    }
    if ((kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost) && !src_pinned) {
        /* pageable source: the data are taken now, the host buffer is free at return */
        auto copy = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + bytes);
        cudaError_t e = enqueue(stream, [dst, copy]() { memcpy(dst, copy->data(), copy->size()); });
        if (e != cudaSuccess || kind != cudaMemcpyHostToHost)
            return e;
        return set_error(drain(device)); /* host to host: synchronous, as CUDA documents */
    }
    cudaError_t e = enqueue(stream, [dst, src, bytes]() { memcpy(dst, src, bytes); });
    if (e != cudaSuccess)
        return e;
    if (kind == cudaMemcpyHostToHost || (kind == cudaMemcpyDeviceToHost && !dst_pinned))
        return set_error(drain(device)); /* to pageable memory, or host to host: returns when done */
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind)
{
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
    return e != cudaSuccess ? e : cudaDeviceSynchronize();
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    if (!stream || (flags & ~(unsigned)cudaStreamNonBlocking))
        return set_error(cudaErrorInvalidValue);
    if (sticky())
        return set_error(sticky());
    std::lock_guard<std::mutex> lock(g_api);
    init_locked();
    cudaStream_t s = new CUstream_st{tls_device, flags, ++g_stream_ids, 0};
    g_streams.insert(s);
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    /* queued work still runs: the queue holds the stream's id, not the stream */
    std::lock_guard<std::mutex> lock(g_api);
    if (!stream || !g_streams.count(stream))
        return set_error(cudaErrorInvalidResourceHandle);
    if (stream->capture) /* CUDA: destroying a capturing stream is an error */
        return set_error(cudaErrorStreamCaptureUnmatched);
    g_streams.erase(stream);
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    int device;
    {
        std::lock_guard<std::mutex> lock(g_api);
        cudaStream_t st = resolve_locked(stream);
        if (!st)
            return set_error(cudaErrorInvalidResourceHandle);
        device = st->device;
    }
    return set_error(drain(device)); /* the device's whole queue: a legal, stricter order */
}

/* Deferred work is not done when first asked about; a second query in a row
 * runs it, so a loop polling for completion ends, as it does on a GPU, while a
 * single query never makes the work happen early. */
cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    if (sticky())
        return set_error(sticky());
    int device;
    {
        std::lock_guard<std::mutex> lock(g_api);
        cudaStream_t st = resolve_locked(stream);
        if (!st)
            return set_error(cudaErrorInvalidResourceHandle);
        if (!pending_locked(g_devices[st->device], st->id)) {
            st->polls = 0;
            return cudaSuccess;
        }
        if (++st->polls < 2)
            return cudaErrorNotReady;
        st->polls = 0;
        device = st->device;
    }
    drain(device);
    return sticky() ? set_error(sticky()) : cudaErrorNotReady;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    if (!event || (flags & ~(unsigned)cudaEventDisableTiming))
        return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_api);
    init_locked();
    cudaEvent_t e = new CUevent_st;
    e->device = tls_device;
    e->flags = flags;
    g_events.insert(e);
    *event = e;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    int device = -1;
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (!g_events.count(event))
            return set_error(cudaErrorInvalidResourceHandle);
        if (event->recorded && !event->done)
            device = event->device;
    }
    if (device >= 0) /* the queued record still writes it */
        drain(device);
    std::lock_guard<std::mutex> lock(g_api);
    g_events.erase(event);
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    if (sticky())
        return set_error(sticky());
    std::lock_guard<std::mutex> lock(g_api);
    cudaStream_t st = resolve_locked(stream);
    if (!g_events.count(event) || !st)
        return set_error(cudaErrorInvalidResourceHandle);
    if (st->capture && refuse_in_capture_locked(st->device))
        return set_error(cudaErrorStreamCaptureUnsupported);
    event->recorded = true;
    event->done = false;
    event->device = st->device;
    push_locked(st, [event]() {
        const double t = now_seconds();
        std::lock_guard<std::mutex> lock(g_api);
        event->seconds = t;
        event->done = true;
    });
    return cudaSuccess;
}

/* As cudaStreamQuery: a second query in a row runs the work. */
cudaError_t cudaEventQuery(cudaEvent_t event)
{
    if (sticky())
        return set_error(sticky());
    int device;
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (!g_events.count(event))
            return set_error(cudaErrorInvalidResourceHandle);
        if (!event->recorded || event->done) {
            event->polls = 0;
            return cudaSuccess;
        }
        if (++event->polls < 2)
            return cudaErrorNotReady;
        event->polls = 0;
        device = event->device;
    }
    drain(device);
    return sticky() ? set_error(sticky()) : cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    int device;
    {
        std::lock_guard<std::mutex> lock(g_api);
        if (!g_events.count(event))
            return set_error(cudaErrorInvalidResourceHandle);
        if (!event->recorded || event->done)
            return sticky() ? set_error(sticky()) : cudaSuccess;
        device = event->device;
    }
    return set_error(drain(device));
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!ms)
        return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_api);
    if (!g_events.count(start) || !g_events.count(end))
        return set_error(cudaErrorInvalidResourceHandle);
    if ((start->flags | end->flags) & cudaEventDisableTiming)
        return set_error(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded)
        return set_error(cudaErrorInvalidResourceHandle);
    if (!start->done || !end->done)
        return cudaErrorNotReady;
    *ms = (float)((end->seconds - start->seconds) * 1e3); /* host time of the emulation */
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
{
    int device = -1;
    {
        std::lock_guard<std::mutex> lock(g_api);
        cudaStream_t st = resolve_locked(stream);
        if (!st)
            return set_error(cudaErrorInvalidResourceHandle);
        if (!g_events.count(event))
            return set_error(cudaErrorInvalidResourceHandle);
        /* one queue per device keeps its streams in order; another device's
         * event is waited for here, on the host */
        if (event->recorded && !event->done && event->device != st->device)
            device = event->device;
    }
    return device >= 0 ? set_error(drain(device)) : cudaSuccess;
}

} /* extern "C" */

/* ------------------------------------------------------------------ stream capture, graphs */

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    using namespace ga_emu;
    if (sticky())
        return set_error(sticky());
    if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
        mode != cudaStreamCaptureModeRelaxed)
        return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_api);
    init_locked();
    if (stream == nullptr) /* CUDA: the legacy stream cannot capture */
        return set_error(cudaErrorStreamCaptureUnsupported);
    cudaStream_t st = resolve_locked(stream);
    if (!st)
        return set_error(cudaErrorInvalidResourceHandle);
    if (st->capture)
        return set_error(cudaErrorIllegalState);
    st->capture = new CUgraph_st;
    st->capture->device = st->device;
    g_devices[st->device].capturing++;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    using namespace ga_emu;
    if (!graph)
        return set_error(cudaErrorInvalidValue);
    *graph = nullptr;
    std::lock_guard<std::mutex> lock(g_api);
    cudaStream_t st = stream ? resolve_locked(stream) : nullptr;
    if (!st)
        return set_error(cudaErrorInvalidResourceHandle);
    if (!st->capture)
        return set_error(cudaErrorStreamCaptureUnmatched);
    CUgraph_st *g = st->capture;
    st->capture = nullptr;
    g_devices[st->device].capturing--;
    if (g->invalidated) {
        delete g;
        return set_error(cudaErrorStreamCaptureInvalidated);
    }
    *graph = g;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status)
{
    using namespace ga_emu;
    if (!status)
        return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_api);
    cudaStream_t st = resolve_locked(stream);
    if (!st)
        return set_error(cudaErrorInvalidResourceHandle);
    *status = !st->capture                ? cudaStreamCaptureStatusNone
              : st->capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                         : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    using namespace ga_emu;
    if (!exec || !graph || flags != 0)
        return set_error(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{graph->device, graph->ops};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    using namespace ga_emu;
    if (sticky())
        return set_error(sticky());
    if (!exec)
        return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_api);
    cudaStream_t st = resolve_locked(stream);
    if (!st)
        return set_error(cudaErrorInvalidResourceHandle);
    if (st->device != exec->device)
        return set_error(cudaErrorInvalidValue);
    for (const std::function<void()> &op : exec->ops)
        push_locked(st, op); /* a copy: the graph can be launched again */
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}
