// A CPU emulator of the CUDA execution model, so g++ can run the exact *.cu
// sources (kernels/emulator.py builds and drives it; see its docstring).
//
//  - every block runs its threads as cooperative fibers (ucontext): a thread
//    runs until __syncthreads(), where it yields; the block moves on when all
//    its threads reached the barrier. Exiting while others wait is reported.
//  - __shared__ storage is `static`: one copy, shared by the block's fibers
//    (blocks run one after another, so one copy serves them all), filled
//    with NaN bytes before every block so reads of unwritten shared memory
//    show. kernels/emulator.py rewrites each `__shared__ T name[...];` into a
//    static that registers itself here (emu::register_shared); a section
//    attribute would be ignored by g++ for statics in function templates.
//    So this header leaves `__shared__` undefined: only the emulator's
//    rewrite compiles.
//  - threads switch only at __syncthreads(), so a plain `+=` by many threads
//    on one address is atomic here: such races need a GPU (racecheck).
//  - shuffle mode runs the threads of every phase, and the blocks, in a
//    seeded random order: a kernel missing a __syncthreads (a race) gives
//    different answers from run to run.
//  - emu_alloc puts every buffer flush against an inaccessible guard page
//    with a canary before it: reading or writing past its end faults (caught
//    and reported with the buffer and offset), writing before it is found
//    by emu_free.
#pragma once
#include <algorithm>
#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>
#include <math.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

struct dim3 {
    unsigned x, y, z;
};
static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
namespace emu {

// Every __shared__ variable (registered the first time a thread reaches its
// declaration) is filled with 0xFF bytes, a NaN as float and as double, then
// and before every block: reading shared memory nobody wrote yields NaN.
const unsigned char SHARED_POISON = 0xFF;
struct SharedRegion {
    void* data;
    size_t bytes;
};
static std::vector<SharedRegion> shared_regions;
inline bool register_shared(void* data, size_t bytes) {
    memset(data, SHARED_POISON, bytes);
    shared_regions.push_back({data, bytes});
    return true;
}

enum State { READY, AT_BARRIER, DONE };
struct Fiber {
    ucontext_t context;
    State state;
    dim3 index;
};
const size_t STACK_BYTES = 256 * 1024;
const unsigned char CANARY = 0xA5;

static ucontext_t scheduler;
static std::vector<Fiber> fibers;
static std::vector<char*> stacks;
static int current = -1;
static void (*kernel_call)(void**) = nullptr;
static void** kernel_args = nullptr;
static char message[1024];
static sigjmp_buf fault_exit;

struct Allocation {
    char* base;     // first guard page
    size_t total;   // bytes mapped, guards included
    char* data;     // the buffer, ending right at the upper guard page
    size_t nbytes;
    int id;
};
static std::vector<Allocation> allocations;
static int next_id = 0;

static void run_fiber(int index) {
    kernel_call(kernel_args);
    fibers[index].state = DONE;  // returning resumes the scheduler (uc_link)
}

static void describe_fault(void* address) {
    char* a = static_cast<char*>(address);
    for (const Allocation& al : allocations) {
        if (a >= al.base && a < al.base + al.total) {
            long long offset = a - al.data;
            snprintf(message, sizeof message,
                     "out-of-bounds access in block (%u,%u,%u) thread (%u,%u,%u): byte offset %lld of buffer #%d "
                     "(%zu bytes)", blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z,
                     offset, al.id, al.nbytes);
            return;
        }
    }
    snprintf(message, sizeof message, "invalid memory access at %p in block (%u,%u,%u) thread (%u,%u,%u)",
             address, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
}

static void on_fault(int signal, siginfo_t* info, void*) {
    if (signal == SIGFPE)  // a GPU returns garbage for x / 0 in integers; the CPU traps
        snprintf(message, sizeof message, "integer division by zero in block (%u,%u,%u) thread (%u,%u,%u)",
                 blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    else
        describe_fault(info->si_addr);
    siglongjmp(fault_exit, 1);
}

// Runs one block; returns false (with `message` set) on a divergent barrier.
static bool run_block(unsigned threads, std::mt19937_64* shuffle) {
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = fibers[t];
        f.state = READY;
        f.index = dim3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = stacks[t];
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = &scheduler;
        makecontext(&f.context, reinterpret_cast<void (*)()>(run_fiber), 1, static_cast<int>(t));
    }
    std::vector<int> order(threads);
    for (int phase = 0;; ++phase) {
        order.clear();
        for (unsigned t = 0; t < threads; ++t)
            if (fibers[t].state == READY) order.push_back(t);
        if (shuffle) std::shuffle(order.begin(), order.end(), *shuffle);
        for (int t : order) {
            current = t;
            threadIdx = fibers[t].index;
            swapcontext(&scheduler, &fibers[t].context);
        }
        unsigned waiting = 0, done = 0;
        for (unsigned t = 0; t < threads; ++t) {
            waiting += fibers[t].state == AT_BARRIER;
            done += fibers[t].state == DONE;
        }
        if (waiting == 0) return true;
        if (done > 0) {
            snprintf(message, sizeof message,
                     "divergent __syncthreads in block (%u,%u,%u): %u threads wait at barrier %d while %u exited",
                     blockIdx.x, blockIdx.y, blockIdx.z, waiting, phase, done);
            return false;
        }
        for (unsigned t = 0; t < threads; ++t) fibers[t].state = READY;
    }
}

}  // namespace emu

inline void __syncthreads() {
    emu::Fiber& f = emu::fibers[emu::current];
    f.state = emu::AT_BARRIER;
    swapcontext(&f.context, &emu::scheduler);
}

// Blocks run one at a time and threads only switch at barriers, so a plain
// read-modify-write is atomic here.
template <class T>
inline T atomicAdd(T* address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}

// ---- the entry points kernels/emulator.py calls through ctypes ----

template <class T>
constexpr char emu_type_code() {
    return std::is_pointer<T>::value                 ? 'p'
           : std::is_same<T, int>::value             ? 'i'
           : std::is_same<T, long long>::value       ? 'q'
           : std::is_same<T, float>::value           ? 'f'
           : std::is_same<T, double>::value          ? 'd'
                                                     : '?';
}

template <class... P, size_t... I>
void emu_invoke(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_cv<P>::type*>(args[I])...);
}

template <class... P>
const char* emu_signature(void (*)(P...)) {
    static const char codes[] = {emu_type_code<P>()..., '\0'};
    return codes;
}

template <class... P>
constexpr size_t emu_arity(void (*)(P...)) { return sizeof...(P); }

// EMU_EXPORT(name) gives ctypes emu_call_<name>(void** args) and
// emu_signature_<name>() (one type code per parameter: p, i, q, f, d).
#define EMU_EXPORT(name)                                                                         \
    extern "C" void emu_call_##name(void** args) {                                               \
        emu_invoke(name, args, std::make_index_sequence<emu_arity(name)>());                     \
    }                                                                                            \
    extern "C" const char* emu_signature_##name() { return emu_signature(name); }

extern "C" void* emu_alloc(size_t nbytes) {
    const size_t page = sysconf(_SC_PAGESIZE);
    const size_t data_pages = nbytes / page + 1;
    const size_t total = (data_pages + 2) * page;
    char* base = static_cast<char*>(mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base == MAP_FAILED) return nullptr;
    mprotect(base, page, PROT_NONE);
    mprotect(base + (data_pages + 1) * page, page, PROT_NONE);
    char* data = base + (data_pages + 1) * page - nbytes;
    memset(base + page, emu::CANARY, data - (base + page));
    emu::allocations.push_back({base, total, data, nbytes, emu::next_id++});
    return data;
}

// Frees a buffer; returns 1 when something wrote just before its start.
extern "C" int emu_free(void* data) {
    const size_t page = sysconf(_SC_PAGESIZE);
    for (size_t k = 0; k < emu::allocations.size(); ++k) {
        emu::Allocation al = emu::allocations[k];
        if (al.data != data) continue;
        int corrupted = 0;
        for (char* p = al.base + page; p < al.data; ++p) corrupted |= static_cast<unsigned char>(*p) != emu::CANARY;
        munmap(al.base, al.total);
        emu::allocations.erase(emu::allocations.begin() + k);
        return corrupted;
    }
    return -1;
}

extern "C" const char* emu_message() { return emu::message; }

// Runs kernel `call` over the grid; 0 on success, 1 on a memory fault or an
// integer division by zero, 2 on a divergent barrier (emu_message() says
// which). seed != 0 shuffles.
extern "C" int emu_launch(void (*call)(void**), void** args, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                          unsigned by, unsigned bz, unsigned long long seed) {
    const unsigned threads = bx * by * bz;
    while (emu::stacks.size() < threads) {
        void* stack = mmap(nullptr, emu::STACK_BYTES, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        emu::stacks.push_back(static_cast<char*>(stack));
    }
    if (emu::fibers.size() < threads) emu::fibers.resize(threads);
    emu::kernel_call = call;
    emu::kernel_args = args;
    gridDim = dim3{gx, gy, gz};
    blockDim = dim3{bx, by, bz};
    std::mt19937_64 random(seed);
    std::mt19937_64* shuffle = seed ? &random : nullptr;

    static std::vector<char> alt_stack(1 << 16);
    stack_t ss = {}, old_ss;
    ss.ss_sp = alt_stack.data();
    ss.ss_size = alt_stack.size();
    sigaltstack(&ss, &old_ss);
    struct sigaction action = {}, old_segv, old_bus, old_fpe;
    action.sa_sigaction = emu::on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &old_segv);
    sigaction(SIGBUS, &action, &old_bus);
    sigaction(SIGFPE, &action, &old_fpe);

    int status = 0;
    if (sigsetjmp(emu::fault_exit, 1) != 0) {
        status = 1;
    } else {
        std::vector<dim3> blocks;
        for (unsigned z = 0; z < gz; ++z)
            for (unsigned y = 0; y < gy; ++y)
                for (unsigned x = 0; x < gx; ++x) blocks.push_back(dim3{x, y, z});
        if (shuffle) std::shuffle(blocks.begin(), blocks.end(), *shuffle);
        for (const dim3& b : blocks) {
            blockIdx = b;
            for (const emu::SharedRegion& r : emu::shared_regions) memset(r.data, emu::SHARED_POISON, r.bytes);
            if (!emu::run_block(threads, shuffle)) {
                status = 2;
                break;
            }
        }
    }
    sigaction(SIGSEGV, &old_segv, nullptr);
    sigaction(SIGBUS, &old_bus, nullptr);
    sigaction(SIGFPE, &old_fpe, nullptr);
    sigaltstack(&old_ss, nullptr);
    return status;
}
