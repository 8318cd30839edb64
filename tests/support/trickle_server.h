// A small in-test server of Livepeer's trickle protocol (the subset the gateway's live sessions
// speak, src/gateway/api/live_video.h), on http::Server: channels of numbered segments.
//   GET /<channel>/<seq>: the segment (200, Lp-Trickle-Seq and Lp-Trickle-Latest headers), held
//     until it is published; 404 with Lp-Trickle-Closed once the channel is closed and has no
//     such segment; 470 with Lp-Trickle-Latest for a segment dropped with Drop().
//   POST /<channel>/<seq>: stores the body as that segment (200, Lp-Trickle-Seq).
//   DELETE /<channel>: closes the channel.
// The test publishes input segments with Publish() and reads what others posted with Segments().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/http_server.h"

namespace switchyard::testing {

class TrickleServer {
 public:
  static absl::StatusOr<std::unique_ptr<TrickleServer>> Start();
  // Closes every channel (held GETs answer 404) before the server stops.
  ~TrickleServer();

  int port() const { return port_; }
  // http://127.0.0.1:PORT/<channel>
  std::string Url(const std::string& channel) const;

  // Publishes the next segment of `channel` (0, 1, 2, ...), waking held GETs.
  void Publish(const std::string& channel, std::string data);
  // Closes `channel`: GETs past its last segment answer 404.
  void Close(const std::string& channel);
  // Forgets segment `seq` of `channel`: a GET for it answers 470.
  void Drop(const std::string& channel, int64_t seq);

  // Segments posted to `channel`, by sequence number.
  std::map<int64_t, std::string> Segments(const std::string& channel) const;
  bool Closed(const std::string& channel) const;
  // Waits (bounded) until `channel` is closed (DELETE or Close()).
  bool WaitClosed(const std::string& channel, std::chrono::milliseconds timeout) const;
  // Waits (bounded) until `channel` holds at least `n` segments.
  bool WaitSegments(const std::string& channel, size_t n, std::chrono::milliseconds timeout) const;
  // GETs held now (waiting for a segment).
  int held() const;
  // Requests received so far (of any kind).
  int requests() const;

 private:
  struct Channel {
    std::map<int64_t, std::string> segments;
    std::map<int64_t, bool> dropped;
    int64_t next = 0;  // Publish()'s next sequence number
    bool closed = false;
    std::vector<std::pair<int64_t, http::Reply>> waiting;
  };
  TrickleServer() = default;
  void Handle(const http::Request& req, http::Reply reply);
  // Answers the held GETs that can be answered now. Called with mu_ held; replies after.
  std::vector<std::pair<http::Reply, http::Response>> WakeLocked(Channel& ch);
  http::Response SegmentLocked(const Channel& ch, int64_t seq) const;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::string, Channel> channels_;
  int requests_ = 0;  // guarded by mu_
  http::ServerPtr server_;
  int port_ = 0;
};

// A loopback TCP listener that counts the connections it accepts (and closes each at once): to
// see whether the gateway connected somewhere it must not.
class ConnectionCounter {
 public:
  // On 127.0.0.1, or on ::1 with `ipv6` (an error where the host has no IPv6 loopback).
  static absl::StatusOr<std::unique_ptr<ConnectionCounter>> Start(bool ipv6 = false);
  ~ConnectionCounter();

  int port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  ConnectionCounter() = default;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace switchyard::testing
