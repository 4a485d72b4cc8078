// The queue of password verifications (PBKDF2) that run off the I/O threads:
// bounded, fair between users, and able to skip work whose client has gone.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tokengate::auth {

// Jobs are grouped by a key (the user name) and the worker takes one job of
// each waiting key in turn, so a role whose every login attempt is expensive,
// or a flood of attempts in one name, delays another user's login by at most
// one job per busy key, not by the whole backlog. At most `capacity` jobs wait
// at once; submit() refuses more. A job is a function that checks for itself
// whether it is still wanted (its client may have hung up) before working.
class VerifierQueue {
 public:
  VerifierQueue(std::size_t capacity, unsigned threads);
  // Stops the workers; jobs still waiting are run with `stopping` set to true
  // (they should only report that they did not run).
  ~VerifierQueue();
  VerifierQueue(const VerifierQueue&) = delete;
  VerifierQueue& operator=(const VerifierQueue&) = delete;

  using Job = std::function<void(bool stopping)>;
  // False (and `job` dropped unrun) when `capacity` jobs are waiting already.
  [[nodiscard]] bool submit(const std::string& key, Job job);

  [[nodiscard]] std::size_t waiting() const;

 private:
  void work();

  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::size_t waiting_ = 0;
  std::unordered_map<std::string, std::deque<Job>> jobs_;  // by key, each FIFO
  std::deque<std::string> turns_;  // keys with jobs, in the order they are served
  std::vector<std::thread> threads_;
};

}  // namespace tokengate::auth
