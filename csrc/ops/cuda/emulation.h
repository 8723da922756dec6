// A host stand-in for the CUDA runtime, so that the .cu files compile with a C++ compiler
// and their kernels run on the CPU: tests/cuda_emulation.cpp includes them with
// AINN_CUDA_EMULATION defined (tests/test_cuda_emulation.py). Never part of the extension.
//
// Why: CI and most development machines have nvcc but no GPU, so the CUDA kernels would
// otherwise be compiled and never run. Emulated, their indexing, halos, grid-stride
// loops and launch geometry are checked against the reference ops everywhere.
//
// How a launch runs: on the calling thread, block after block. Every CUDA thread of a
// block is a fiber (ucontext) with its own stack, run until it finishes or reaches
// `__syncthreads()`, where it yields until the block's other threads are there too; so
// `__shared__` variables can be function statics, shared by the block and reused by the
// next, which is what shared memory is. A kernel whose first thread finishes without a
// barrier has none (a barrier not reached by every thread is undefined in CUDA), and its
// other threads run as plain calls, which is most kernels here.
// What it cannot show: races between blocks (they run one at a time) or within a warp,
// device math (host libm stands in for CUDA's exp) and speed.
#pragma once

#include <ATen/ATen.h>

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

// CUDA's math overloads are global; bring the host float overloads in beside ::exp(double).
using std::exp;

namespace ainn_fast {
namespace cuda {

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emulation {

inline thread_local dim3 thread_idx, block_idx, block_dim, grid_dim;

// Blocks a grid-stride kernel gets, as if the device had this many multiprocessors (see
// blocks_for); small, so that the tests' tensors span several grid strides.
inline int multiprocessors = 2;

// Element counts up to which the kernels index in 32 bits (see cuda_utils.cuh); the tests
// lower it to run the 64-bit variants on small tensors.
inline int64_t int32_index_limit = std::numeric_limits<int32_t>::max() / 2;

// The fibers of the block being run, and the scheduler's context they yield to.
struct Fiber {
  ucontext_t context;
  bool finished = false;
};

// Fiber stacks, kept for the next launch (kernels need little: a few KiB of frames).
constexpr size_t kStack = 64 * 1024;

inline char* fiber_stack(size_t t) {
  static thread_local std::vector<std::unique_ptr<char[]>> stacks;
  while (stacks.size() <= t) stacks.emplace_back(new char[kStack]);
  return stacks[t].get();
}

struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  std::function<void()> body;  // the kernel with its arguments
  Fiber* current = nullptr;
  bool used_barrier = false;
};

inline thread_local Block* running = nullptr;

inline void fiber_entry() {
  running->body();
  running->current->finished = true;
  swapcontext(&running->current->context, &running->scheduler);
}

inline void set_thread(const dim3& block, int t) {
  thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
}

// Run every thread of the current block (block_idx set): the first in a fiber; the rest
// in fibers too if it met a barrier, else as plain calls.
inline void run_block(Block& b, const dim3& block, int threads) {
  auto start = [&](int t) {
    Fiber& f = b.fibers[t];
    f.finished = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = fiber_stack(t);
    f.context.uc_stack.ss_size = kStack;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_entry, 0);
  };
  auto resume = [&](int t) {
    b.current = &b.fibers[t];
    set_thread(block, t);
    swapcontext(&b.scheduler, &b.fibers[t].context);
  };
  start(0);
  resume(0);
  if (b.fibers[0].finished && !b.used_barrier) {
    b.current = nullptr;  // a barrier now would be one the first thread never reached
    for (int t = 1; t < threads; ++t) {
      set_thread(block, t);
      b.body();
    }
    return;
  }
  for (int t = 1; t < threads; ++t) {
    start(t);
    resume(t);
  }
  // Every unfinished fiber now waits at the same barrier: release them, phase by phase.
  for (bool pending = true; pending;) {
    pending = false;
    for (int t = 0; t < threads; ++t) {
      if (!b.fibers[t].finished) {
        resume(t);
        pending = true;
      }
    }
  }
}

}  // namespace emulation

#define threadIdx (::ainn_fast::cuda::emulation::thread_idx)
#define blockIdx (::ainn_fast::cuda::emulation::block_idx)
#define blockDim (::ainn_fast::cuda::emulation::block_dim)
#define gridDim (::ainn_fast::cuda::emulation::grid_dim)

inline void __syncthreads() {
  emulation::Block* b = emulation::running;
  TORCH_CHECK(b != nullptr && b->current != nullptr,
              "__syncthreads reached by some threads of a block only (undefined in CUDA), or outside a kernel");
  b->used_barrier = true;
  swapcontext(&b->current->context, &b->scheduler);
}

// __shfl_xor_sync on the block's fibers: each thread posts its value, meets the block at a
// barrier, reads its partner's (thread ^ lane_mask, in the same warp for masks below 32),
// and meets the block again before the slots are reused. Valid where every thread of the
// block that has not returned shuffles alike, as a full-mask shuffle needs in CUDA too.
template <typename T>
T __shfl_xor_sync(unsigned int /*mask*/, T value, int lane_mask) {
  static T slots[1024];
  const int t = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
  slots[t] = value;
  __syncthreads();
  const T other = slots[t ^ lane_mask];
  __syncthreads();
  return other;
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  TORCH_CHECK(threads >= 1 && threads <= 1024, "emulated launch: ", threads, " threads per block");
  TORCH_CHECK(emulation::running == nullptr, "emulated launch inside an emulated kernel");
  emulation::Block b;
  b.fibers.resize(threads);
  b.body = [&] { kernel(static_cast<Params>(args)...); };
  emulation::running = &b;
  emulation::block_dim = block;
  emulation::grid_dim = grid;
  for (unsigned int bz = 0; bz < grid.z; ++bz)
    for (unsigned int by = 0; by < grid.y; ++by)
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        emulation::block_idx = dim3(bx, by, bz);
        emulation::run_block(b, block, threads);
      }
  emulation::running = nullptr;
}

struct DeviceGuard {
  explicit DeviceGuard(const at::Device&) {}
};

inline void check_cuda(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.is_cpu(), op, ": the CUDA emulation runs on CPU tensors");
}

}  // namespace cuda
}  // namespace ainn_fast
