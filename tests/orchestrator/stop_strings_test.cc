#include "orchestrator/pipelines/stop_strings.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "orchestrator/pipelines/request_validation.h"

namespace switchyard::orchestrator {
namespace {

// Feeds `deltas` and returns what the client would see, and whether a stop string ended it.
std::pair<std::string, bool> Filtered(const std::vector<std::string>& stops,
                                      const std::vector<std::string>& deltas) {
  StopStringFilter filter(stops);
  std::string out;
  for (const auto& d : deltas) {
    out += filter.Push(d);
    if (filter.stopped()) return {out, true};
  }
  return {out + filter.Flush(), false};
}

TEST(StopStringFilter, NoStopStringsPassEverythingAtOnce) {
  StopStringFilter filter({});
  EXPECT_EQ(filter.Push("Hello"), "Hello");
  EXPECT_EQ(filter.Push(""), "");
  EXPECT_EQ(filter.Flush(), "");
  EXPECT_FALSE(filter.stopped());
}

TEST(StopStringFilter, AStopStringInOneDeltaCutsTheTextBeforeIt) {
  EXPECT_EQ(Filtered({"\n\n"}, {"one\n\ntwo"}), std::make_pair(std::string("one"), true));
  EXPECT_EQ(Filtered({"END"}, {"END"}), std::make_pair(std::string(""), true));
}

TEST(StopStringFilter, AStopStringSplitAcrossDeltasIsFoundAndNothingOfItLeaks) {
  StopStringFilter filter({"STOP"});
  EXPECT_EQ(filter.Push("abc S"), "abc ");  // "S" may start STOP: held
  EXPECT_EQ(filter.Push("T"), "");
  EXPECT_EQ(filter.Push("O"), "");
  EXPECT_EQ(filter.Push("P and more"), "");
  EXPECT_TRUE(filter.stopped());
  EXPECT_EQ(filter.Push("later"), "");
  EXPECT_EQ(filter.Flush(), "");
}

TEST(StopStringFilter, AFalseStartIsReleasedOnceItCannotBeAStopString) {
  StopStringFilter filter({"STOP"});
  EXPECT_EQ(filter.Push("ST"), "");
  EXPECT_EQ(filter.Push("AR"), "STAR");
  EXPECT_EQ(filter.Push("S"), "");
  EXPECT_EQ(filter.Flush(), "S");  // generation ended: the held text is the client's
  EXPECT_FALSE(filter.stopped());
}

TEST(StopStringFilter, TheEarliestOfSeveralStopStringsWins) {
  EXPECT_EQ(Filtered({"world", "lo"}, {"hello world"}), std::make_pair(std::string("hel"), true));
  EXPECT_EQ(Filtered({"ab", "b"}, {"xa", "b"}), std::make_pair(std::string("x"), true));
}

TEST(StopStringFilter, OverlappingPrefixesAreHeldUntilDecided) {
  // "aab": after "aa" the tail "a" and "aa" could both start it.
  EXPECT_EQ(Filtered({"aab"}, {"a", "a", "a", "b", "c"}), std::make_pair(std::string("a"), true));
  EXPECT_EQ(Filtered({"aab"}, {"a", "a", "a", "c"}), std::make_pair(std::string("aaac"), false));
}

TEST(StopStringFilter, MultiByteCharactersAreNeverSplit) {
  // "é" is two bytes; the stop string starts with it.
  StopStringFilter filter({"\xC3\xA9t\xC3\xA9"});
  EXPECT_EQ(filter.Push("caf\xC3\xA9"), "caf");
  EXPECT_EQ(filter.Push(" ok"), "\xC3\xA9 ok");
  EXPECT_EQ(Filtered({"\xE2\x82\xAC"}, {"5 ", "\xE2\x82\xAC", "!"}),
            std::make_pair(std::string("5 "), true));
}

v1::LLMRequest Chat() {
  v1::LLMRequest r;
  r.set_model("m");
  auto* m = r.add_messages();
  m->set_role("user");
  m->set_content("hi");
  return r;
}

TEST(ValidateLlmRequestStopSeedPrompt, StopStringsAreBoundedInCountAndSize) {
  v1::LLMRequest r = Chat();
  for (int i = 0; i < kMaxStopStrings; ++i) r.add_stop(std::string(kMaxStopStringBytes, 'x'));
  auto ok = ValidateLlmRequest(r, LlmOptions());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->stop.size(), static_cast<size_t>(kMaxStopStrings));
  r.add_stop("y");
  auto many = ValidateLlmRequest(r, LlmOptions());
  EXPECT_EQ(many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(many.status().message().find("at most 4"), std::string::npos) << many.status();
  r = Chat();
  r.add_stop("");
  auto empty = ValidateLlmRequest(r, LlmOptions());
  EXPECT_NE(empty.status().message().find("stop[0]"), std::string::npos) << empty.status();
  r = Chat();
  r.add_stop("fine");
  r.add_stop(std::string(kMaxStopStringBytes + 1, 'x'));
  auto big = ValidateLlmRequest(r, LlmOptions());
  EXPECT_NE(big.status().message().find("stop[1]"), std::string::npos) << big.status();
}

TEST(ValidateLlmRequestStopSeedPrompt, TheRequestsSeedElseTheModels) {
  LlmOptions options;
  options.seed = 42;
  v1::LLMRequest r = Chat();
  EXPECT_EQ(ValidateLlmRequest(r, options)->seed, 42);
  r.set_seed(-7);
  EXPECT_EQ(ValidateLlmRequest(r, options)->seed, -7);
}

TEST(ValidateLlmRequestStopSeedPrompt, APromptOrMessagesNotBoth) {
  v1::LLMRequest r;
  r.set_model("m");
  r.set_prompt("Once upon a time");
  EXPECT_TRUE(ValidateLlmRequest(r, LlmOptions()).ok());
  r.set_prompt("");
  auto empty = ValidateLlmRequest(r, LlmOptions());
  EXPECT_NE(empty.status().message().find("prompt"), std::string::npos) << empty.status();
  v1::LLMRequest both = Chat();
  both.set_prompt("x");
  auto st = ValidateLlmRequest(both, LlmOptions());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find("not both"), std::string::npos) << st.status();
  LlmOptions small;
  small.max_prompt_chars = 4;
  r.set_prompt("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9");  // 4 characters, 8 bytes: at the limit
  EXPECT_TRUE(ValidateLlmRequest(r, small).ok());
  r.set_prompt("abcde");
  EXPECT_EQ(ValidateLlmRequest(r, small).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::orchestrator
