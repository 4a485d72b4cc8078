// Round-robin verification queue (see verifier_queue.hpp).
#include "proxy/auth/verifier_queue.hpp"

#include <algorithm>

namespace tokengate::auth {

VerifierQueue::VerifierQueue(std::size_t capacity, unsigned threads) : capacity_(std::max<std::size_t>(capacity, 1)) {
  for (unsigned i = 0; i < std::max(threads, 1u); ++i) threads_.emplace_back([this] { work(); });
}

VerifierQueue::~VerifierQueue() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

bool VerifierQueue::submit(const std::string& key, Job job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || waiting_ >= capacity_) return false;
    auto& q = jobs_[key];
    if (q.empty()) turns_.push_back(key);
    q.push_back(std::move(job));
    ++waiting_;
  }
  wake_.notify_one();
  return true;
}

std::size_t VerifierQueue::waiting() const {
  std::lock_guard lock(mutex_);
  return waiting_;
}

void VerifierQueue::work() {
  for (;;) {
    Job job;
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !turns_.empty(); });
      if (turns_.empty()) return;  // stopping, nothing left
      stopping = stopping_;
      std::string key = std::move(turns_.front());
      turns_.pop_front();
      auto it = jobs_.find(key);
      job = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty())
        jobs_.erase(it);
      else
        turns_.push_back(std::move(key));  // its next job waits for the others' turns
      --waiting_;
    }
    job(stopping);
  }
}

}  // namespace tokengate::auth
