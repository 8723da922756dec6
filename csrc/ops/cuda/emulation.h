// A host stand-in for the CUDA runtime, so that the .cu files compile with a C++ compiler
// and their kernels run on the CPU: tests/cuda_emulation.cpp includes them with
// AINN_CUDA_EMULATION defined (tests/test_cuda_emulation.py). Never part of the extension.
//
// Why: CI and most development machines have nvcc but no GPU, so the CUDA kernels would
// otherwise be compiled and never run. Emulated, their indexing, halos, grid-stride
// loops and launch geometry are checked against the reference ops everywhere.
//
// How a launch runs: one host thread per CUDA thread of a block (blockDim threads), each
// walking every block of the grid in order, with a barrier between blocks; `__shared__`
// variables become function statics, shared by the block's threads and reused block
// after block, which is what shared memory is. `__syncthreads()` is that barrier too.
// What it cannot show: races between blocks (they run one at a time), warp-level
// behaviour, device math (host libm stands in for CUDA's exp) and speed.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
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

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const int64_t generation = generation_;
    if (++waiting_ == n_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int n_, waiting_ = 0;
  int64_t generation_ = 0;
};

inline thread_local Barrier* block_barrier = nullptr;

}  // namespace emulation

#define threadIdx (::ainn_fast::cuda::emulation::thread_idx)
#define blockIdx (::ainn_fast::cuda::emulation::block_idx)
#define blockDim (::ainn_fast::cuda::emulation::block_dim)
#define gridDim (::ainn_fast::cuda::emulation::grid_dim)

inline void __syncthreads() { emulation::block_barrier->wait(); }

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  TORCH_CHECK(threads >= 1 && threads <= 1024, "emulated launch: ", threads, " threads per block");
  emulation::Barrier barrier(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      emulation::block_barrier = &barrier;
      emulation::block_dim = block;
      emulation::grid_dim = grid;
      emulation::thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
      for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
          for (unsigned int bx = 0; bx < grid.x; ++bx) {
            emulation::block_idx = dim3(bx, by, bz);
            kernel(static_cast<Params>(args)...);
            barrier.wait();  // the block's shared memory is the next block's
          }
    });
  }
  for (auto& thread : pool) thread.join();
}

struct DeviceGuard {
  explicit DeviceGuard(const at::Device&) {}
};

inline void check_cuda(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.is_cpu(), op, ": the CUDA emulation runs on CPU tensors");
}

}  // namespace cuda
}  // namespace ainn_fast
