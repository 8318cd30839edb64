// The Redis client the shared state uses (gateway/state/redis_client.h), against a real
// redis-server the test starts (tests/support/redis_server.h): commands sent without waiting for
// their answers (Send) must not shift another command's answer, must all run, and must reach
// Redis before what the gateway sends after them. Every loop is bounded in count and time.
#include "gateway/state/redis_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"
#include "support/redis_test_fixture.h"

namespace switchyard::gateway {
namespace {

using ::switchyard::testing::RedisServer;
using ::switchyard::testing::TempDir;

// A Redis of the test's own (support/redis_test_fixture.h).
class RedisClientTest : public ::switchyard::testing::RedisTest {
 protected:
  std::unique_ptr<RedisClient> Client() const {
    auto client = RedisClient::Create(ClientOptions());
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
};

// The answer a sent command owes is read by whoever takes its connection next, never returned
// as that caller's answer: an error answer included.
TEST_F(RedisClientTest, SentCommandsAnswersAreNotAnotherCommandsAnswer) {
  auto client = Client();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send({"INCR", "counter"}).ok());
  auto got = client->Run({"GET", "counter"});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->type, RedisReply::Type::kString);
  EXPECT_EQ(got->str, "1");
  // "counter" is a string: HSET answers WRONGTYPE, owed to the next taker.
  ASSERT_TRUE(client->Send({"HSET", "counter", "field", "value"}).ok());
  auto echo = client->Run({"ECHO", "mine"});
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_EQ(echo->type, RedisReply::Type::kString);
  EXPECT_EQ(echo->str, "mine");
  // Sends in a row: each settles the one before it.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client->Send({"INCR", "counter"}).ok());
  got = client->Run({"GET", "counter"});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->str, "6");
}

// Threads sharing one client, each alternating Send and Run: every Run gets its own answer and
// every sent command runs once.
TEST_F(RedisClientTest, SendAndRunFromManyThreads) {
  auto client = Client();
  ASSERT_NE(client, nullptr);
  constexpr int kThreads = 8, kRounds = 200;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        if (!client->Send({"INCR", "sent"}).ok()) failed++;
        const std::string token = absl::StrCat("t", t, ":", i);
        auto echo = client->Run({"ECHO", token});
        if (!echo.ok()) {
          failed++;
        } else if (echo->str != token) {
          wrong++;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  auto total = client->Run({"GET", "sent"});
  ASSERT_TRUE(total.ok()) << total.status();
  EXPECT_EQ(total->str, absl::StrCat(kThreads * kRounds));
}

// `answered` runs once per Send: with true once the answer was read (by the next taker of the
// connection), with false when the connection was dropped before (here: a server that takes the
// bytes and never answers, so the owed answer times out).
TEST_F(RedisClientTest, AnsweredTellsWhetherRedisAnswered) {
  auto client = Client();
  ASSERT_NE(client, nullptr);
  std::vector<bool> calls;
  ASSERT_TRUE(
      client->Send({"SET", "value", "1"}, [&](bool answered) { calls.push_back(answered); }).ok());
  EXPECT_TRUE(calls.empty());  // not read yet
  auto got = client->Run({"GET", "value"});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->str, "1");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_TRUE(calls[0]);

  // A listening socket nobody accepts on: the kernel completes the handshake and buffers the
  // command, and no answer ever comes.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  RedisClientOptions options;
  options.address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  options.timeout = absl::Milliseconds(100);
  auto silent = RedisClient::Create(options);
  ASSERT_TRUE(silent.ok()) << silent.status();
  std::vector<bool> lost;
  ASSERT_TRUE((*silent)
                  ->Send({"SET", "value", "2"}, [&](bool answered) { lost.push_back(answered); })
                  .ok());
  EXPECT_TRUE(lost.empty());
  EXPECT_FALSE((*silent)->Run({"GET", "value"}).ok());  // the owed answer times out first
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_FALSE(lost[0]);
  silent->reset();
  ::close(fd);
}

// Redis serves each connection in order, but not connections in the order their bytes came (a
// command sent later on another connection may run first: observed on loopback), which is why
// the quota backend carries its unanswered releases into its next admission. On one connection
// the order holds: a client's sends and its next command, one after another.
TEST_F(RedisClientTest, OneConnectionKeepsTheOrder) {
  auto client = Client();
  ASSERT_NE(client, nullptr);
  for (int i = 1; i <= 300; ++i) {
    ASSERT_TRUE(client->Send({"SET", "value", absl::StrCat(i)}).ok());
    auto seen = client->Run({"GET", "value"});  // the only idle connection: the same one
    ASSERT_TRUE(seen.ok()) << seen.status();
    ASSERT_EQ(seen->str, absl::StrCat(i));
  }
}

// A server gone between a Send and the next command: the owed answer cannot be read, the
// connection is dropped and the next command is a clean error (then works again on a new
// connection once the server is back).
TEST_F(RedisClientTest, AnOwedAnswerLostWithTheServerIsACleanError) {
  RedisClientOptions options;
  options.address = redis_->address();
  options.timeout = absl::Milliseconds(1000);
  options.retry_interval = absl::ZeroDuration();
  auto client = RedisClient::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Ping().ok());
  ASSERT_TRUE((*client)->Send({"INCR", "counter"}).ok());
  redis_->Stop();
  auto down = (*client)->Run({"GET", "counter"});
  EXPECT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  ASSERT_TRUE(redis_->Restart().ok());
  bool back = false;
  for (int i = 0; i < 50 && !back; ++i) {  // bounded: 5 s
    back = (*client)->Ping().ok();
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(back);
}

}  // namespace
}  // namespace switchyard::gateway
