// The shared-memory transport's only synchronization: a barrier over flag words in the shared segment.
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <time.h>

#include <chrono>
#include <string>

#include "ops/ops.h"

namespace deep_ep {

using namespace sgl_npu_core;

namespace {

void pause_briefly(int64_t spins) {
  if (spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else if (spins < 2048) {
    sched_yield();  // ranks may outnumber the cores: let the one we wait for run
  } else {
    const timespec nap{0, 20000};
    nanosleep(&nap, nullptr);
  }
}

bool process_gone(int64_t pid) { return pid > 0 && kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH; }

}  // namespace

void shm_barrier(Tensor flags, int64_t rank, int64_t epoch, double timeout_s, const Tensor& pids) {
  check_cpu(flags, "flags");
  check_dtype(flags, ScalarType::Long, "flags");
  STD_TORCH_CHECK(flags.dim() == 2 && flags.is_contiguous() && flags.size(1) >= flags.size(0),
                  "flags must be a contiguous [ranks, >= ranks]");
  const int64_t ranks = flags.size(0), row = flags.size(1);
  STD_TORCH_CHECK(0 <= rank && rank < ranks, "rank ", rank, " is outside [0, ", ranks, ")");
  const int64_t* pid = checked_vector<int64_t>(pids, ranks, ScalarType::Long, "pids");
  int64_t* f = static_cast<int64_t*>(flags.mutable_data_ptr());
  // flags[p, s] is the last epoch rank s announced to rank p. Release: our earlier writes (rows copied into
  // peers' memory) are visible to whoever sees the new epoch.
  for (int64_t p = 0; p < ranks; ++p) __atomic_store_n(&f[p * row + rank], epoch, __ATOMIC_RELEASE);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t spins = 0;; ++spins) {
    int64_t waiting = -1;
    for (int64_t s = 0; s < ranks && waiting < 0; ++s)
      if (__atomic_load_n(&f[rank * row + s], __ATOMIC_ACQUIRE) < epoch) waiting = s;
    if (waiting < 0) return;
    pause_briefly(spins);
    if (spins % 512 != 511) continue;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string late;
    bool dead = false;
    for (int64_t s = 0; s < ranks; ++s)
      if (__atomic_load_n(&f[rank * row + s], __ATOMIC_ACQUIRE) < epoch) {
        dead = dead || process_gone(pid[s]);
        late += (late.empty() ? "" : ", ") + std::to_string(s);
      }
    STD_TORCH_CHECK(!dead, "rank(s) ", late, " of the group did not arrive, and one of their processes has exited");
    STD_TORCH_CHECK(waited < timeout_s, "rank(s) ", late, " of the group did not arrive within ", timeout_s,
                    " s (timeout_s)");
  }
}

}  // namespace deep_ep
