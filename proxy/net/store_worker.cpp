// The token store's worker thread (see store_worker.hpp).
#include "proxy/net/store_worker.hpp"

#include <pthread.h>

namespace tokengate::net {

StoreWorker::StoreWorker(std::size_t max_pending) : max_pending_(max_pending) {
  thread_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "tg-store");
    loop();
  });
}

StoreWorker::~StoreWorker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

bool StoreWorker::submit(std::unique_ptr<Job>& job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= max_pending_) return false;
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

std::size_t StoreWorker::pending() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void StoreWorker::loop() {
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued ran
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job->run();
  }
}

}  // namespace tokengate::net
