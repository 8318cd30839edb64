// A fixture for tests of state kept in Redis (gateway/state/): a redis-server of the test's own
// (support/redis_server.h), a key prefix per test (the tests share nothing in Redis), a raw client
// to look at or spoil what a store wrote, and the client options the stores under test get.
// Header-only: the test binaries that use it link the gateway's state library.
#pragma once

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gateway/state/redis_client.h"
#include "support/media_fixtures.h"
#include "support/redis_server.h"

namespace switchyard::testing {

class RedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto redis = RedisServer::Start(tmp_.path());
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *std::move(redis);
    prefix_ = absl::StrCat(
        "sytest:", ::testing::UnitTest::GetInstance()->current_test_info()->name(), ":");
    gateway::RedisClientOptions raw = ClientOptions();
    raw.retry_interval = absl::ZeroDuration();
    auto client = gateway::RedisClient::Create(raw);
    ASSERT_TRUE(client.ok()) << client.status();
    raw_ = *std::move(client);
  }

  // This Redis, with a generous timeout (the test host may be busy), retried 100 ms after a
  // failure.
  gateway::RedisClientOptions ClientOptions() const {
    gateway::RedisClientOptions o;
    o.address = redis_->address();
    o.timeout = absl::Milliseconds(500);
    o.retry_interval = absl::Milliseconds(100);
    return o;
  }

  TempDir tmp_;
  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<gateway::RedisClient> raw_;
  std::string prefix_;
};

}  // namespace switchyard::testing
