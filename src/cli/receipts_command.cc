// Receipts (docs/security.md, "Receipts"; docs/metering.md, "Receipts export"):
// `switchyard usage --receipts FILE|-` writes the ledger's rows with their receipts as JSON lines
// (ExportReceipts, called by usage_command.cc), and `switchyard verify-receipts FILE` checks such
// a file offline: every receipt's signature, against trusted keys when given, each row against
// its receipt, the amounts, and prints the totals per node. Exit 0 when every receipt is good,
// 1 when any is bad (or, with --strict, any row has none), 2 for a usage error.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/cli_files.h"
#include "cli/cli_support.h"
#include "cli/command.h"
#include "common/json_limits.h"
#include "common/logging.h"
#include "common/node_identity.h"
#include "common/receipt.h"

namespace switchyard::cli::internal {

namespace v1 = switchyard::v1;

namespace {

nlohmann::json PriceJson(double price) {
  if (std::isnan(price)) return nullptr;
  return price;
}

nlohmann::json RowJson(const v1::UsageRow& r) {
  nlohmann::json j;
  j["job_id"] = r.job_id();
  j["api_key_id"] = r.api_key_id();
  j["pipeline"] = r.pipeline();
  j["model_id"] = r.model_id();
  j["orchestrator"] = r.orchestrator();
  j["unit"] = r.unit();
  j["units"] = r.units();
  j["reported_units"] = r.reported_units();
  j["price_per_unit"] = PriceJson(r.price_per_unit());
  j["reported_price_per_unit"] = PriceJson(r.reported_price_per_unit());
  j["amount"] = PriceJson(r.amount());
  j["disputed"] = r.disputed();
  j["dispute"] = r.dispute();
  j["completed_unix_ms"] = r.completed_unix_ms();
  j["receipt_status"] = r.receipt_status();
  j["receipt"] = r.has_receipt() ? ReceiptToJson(r.receipt()) : nlohmann::json(nullptr);
  return j;
}

}  // namespace

int ExportReceipts(const GlobalOptions& global, const v1::ListUsageRowsRequest& first,
                   const std::string& path, std::ostream& out, std::ostream& err) {
  if (path != "-") {
    if (absl::Status st = CheckWritableFile(path); !st.ok()) return ReportUsageError(st, err);
  }
  v1::ListUsageRowsRequest request = first;
  request.set_page_size(kReceiptsPageSize);
  std::string data;
  int64_t rows = 0;
  // Bounded by the ledger; a page token that does not move would loop: stop on a repeat.
  std::string last_token;
  for (;;) {
    v1::ListUsageRowsResponse response;
    double elapsed_ms = 0;
    if (auto rc = CallUnary(global, &v1::Gateway::Stub::ListUsageRows, request, &response,
                            &elapsed_ms, err)) {
      return *rc;
    }
    for (const auto& row : response.rows()) {
      data += RowJson(row).dump();
      data += '\n';
      ++rows;
    }
    if (response.next_page_token().empty()) break;
    if (response.next_page_token() == last_token) {
      err << "error: the gateway returned the same page token twice; export stopped\n";
      return kExitRpcError;
    }
    last_token = response.next_page_token();
    request.set_page_token(last_token);
  }
  if (path == "-") {
    out << data;
    return kExitOk;
  }
  if (absl::Status st = WriteFileAtomically(path, data); !st.ok()) {
    err << "error: " << st.message() << "\n";
    return kExitRpcError;
  }
  out << rows << " row" << (rows == 1 ? "" : "s") << " written to " << path << "\n";
  return kExitOk;
}

namespace {

// Trusted keys: one per line, "<64 hex digits>" (any node id) or "<node id> <64 hex digits>";
// blank lines and lines starting with '#' are skipped.
struct TrustedKeys {
  std::set<std::string> any_node;                        // raw keys
  std::map<std::string, std::set<std::string>> of_node;  // node id -> raw keys
};

absl::StatusOr<TrustedKeys> ReadTrustedKeys(const std::string& path) {
  auto text = ReadInputFile(path, "keys file");
  if (!text.ok()) return text.status();
  if (text->size() > kMaxReceiptKeysFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("keys file ", Quote(path), " is over ", kMaxReceiptKeysFileBytes, " bytes"));
  }
  TrustedKeys keys;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (parts.size() > 2) {
      return absl::InvalidArgumentError(absl::StrCat("keys file ", Quote(path), " line ", line_no,
                                                     ": \"KEY\" or \"NODE_ID KEY\" expected"));
    }
    auto key = ParseNodeKeyHex(parts.back());
    if (!key.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("keys file ", Quote(path), " line ", line_no, ": ", key.status().message()));
    }
    if (parts.size() == 1) {
      keys.any_node.insert(*key);
    } else {
      keys.of_node[std::string(parts[0])].insert(*key);
    }
  }
  return keys;
}

struct NodeTotals {
  int64_t receipts = 0;
  int64_t units = 0;         // signed units
  double signed_amount = 0;  // signed units x signed price
  double paid = 0;           // the gateway's amounts of those rows
};

struct Summary {
  int64_t rows = 0;
  int64_t good = 0;
  int64_t unsigned_rows = 0;
  int64_t bad = 0;
  std::map<std::string, NodeTotals> nodes;
  std::set<std::string> gateways;
};

bool SamePrice(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

double JsonNumber(const nlohmann::json& j, const char* name, bool* ok) {
  auto it = j.find(name);
  if (it == j.end()) {
    *ok = false;
    return 0;
  }
  if (it->is_null()) return std::nan("");
  if (!it->is_number()) {
    *ok = false;
    return 0;
  }
  return it->get<double>();
}

// One line's receipt and row: "" when good, else why not.
std::string CheckLine(const nlohmann::json& row, const TrustedKeys* trusted, bool* has_receipt,
                      v1::JobReceipt* receipt_out) {
  *has_receipt = false;
  if (!row.is_object()) return "not a JSON object";
  auto rec = row.find("receipt");
  if (rec == row.end() || rec->is_null()) return "";
  *has_receipt = true;
  auto receipt = ReceiptFromJson(*rec);
  if (!receipt.ok()) return std::string(receipt.status().message());
  *receipt_out = *receipt;
  if (absl::Status st = VerifyReceiptSignature(*receipt); !st.ok()) {
    return absl::StrCat("signature: ", st.message());
  }
  const std::string& key = receipt->node_public_key();
  if (trusted != nullptr) {
    auto of = trusted->of_node.find(receipt->node_id());
    const bool pinned = of != trusted->of_node.end();
    if (pinned ? of->second.count(key) == 0 : trusted->any_node.count(key) == 0) {
      return absl::StrCat("key ", NodeKeyHex(key), " is not trusted",
                          pinned ? absl::StrCat(" for node ", Quote(receipt->node_id())) : "");
    }
  }
  auto str = [&row](const char* name) {
    auto it = row.find(name);
    return it != row.end() && it->is_string() ? it->get<std::string>() : std::string("\x01");
  };
  auto integer = [&row](const char* name, int64_t* v) {
    auto it = row.find(name);
    if (it == row.end() || !it->is_number_integer()) return false;
    *v = it->get<int64_t>();
    return true;
  };
  std::vector<std::string> wrong;
  if (str("job_id") != receipt->job_id()) wrong.push_back("job_id");
  if (str("orchestrator") != receipt->node_id()) wrong.push_back("orchestrator");
  if (str("pipeline") != receipt->pipeline()) wrong.push_back("pipeline");
  int64_t reported_units = 0, units = 0;
  if (!integer("reported_units", &reported_units) || reported_units != receipt->units()) {
    wrong.push_back("reported_units");
  }
  bool ok = true;
  const double reported_price = JsonNumber(row, "reported_price_per_unit", &ok);
  if (!ok || !SamePrice(reported_price, receipt->price_per_unit())) {
    wrong.push_back("reported_price_per_unit");
  }
  auto disputed = row.find("disputed");
  if (disputed == row.end() || !disputed->is_boolean()) {
    wrong.push_back("disputed");
  } else if (!disputed->get<bool>()) {
    // A paid row: the gateway paid the signed units at no more than the signed price.
    ok = true;
    const double price = JsonNumber(row, "price_per_unit", &ok);
    const double amount = JsonNumber(row, "amount", &ok);
    if (!integer("units", &units) || units != receipt->units()) wrong.push_back("units");
    if (!ok || !(price <= receipt->price_per_unit())) wrong.push_back("price_per_unit");
    const double expected = static_cast<double>(units) * price;
    if (!ok || !(std::fabs(amount - expected) <= 1e-9 * std::max(1.0, std::fabs(expected)))) {
      wrong.push_back("amount");
    }
  }
  if (!wrong.empty()) {
    std::string list;
    for (const auto& w : wrong) absl::StrAppend(&list, list.empty() ? "" : ", ", w);
    return absl::StrCat("the row's ", list, " disagree with its signed receipt");
  }
  return "";
}

class VerifyReceiptsCommand final : public Command {
 public:
  VerifyReceiptsCommand()
      : Command("verify-receipts",
                "Check a receipts export (switchyard usage --receipts) offline: signatures, rows "
                "against receipts, amounts; totals per node. Exit 1 on any bad receipt") {}

  std::string footer() const override {
    return "FILE is JSON lines as `switchyard usage --receipts` writes them (docs/metering.md); "
           "'-' reads stdin. No gateway is contacted.\n";
  }

  void AddOptions(CLI::App& c) override {
    c.add_option("FILE", file_, "The export to check ('-': stdin)")->required();
    c.add_option("--keys", keys_,
                 "Trusted node keys, one a line: KEY or NODE_ID KEY (64 hex digits); a receipt "
                 "signed by another key is bad");
    c.add_flag("--strict", strict_, "Rows without a receipt are bad too");
  }

  int Run(const GlobalOptions& global, std::ostream& out, std::ostream& err) override {
    std::optional<TrustedKeys> trusted;
    if (!keys_.empty()) {
      auto keys = ReadTrustedKeys(keys_);
      if (!keys.ok()) return ReportUsageError(keys.status(), err);
      trusted = *std::move(keys);
    }
    std::ifstream file;
    std::istream* in = &std::cin;
    if (file_ != "-") {
      file.open(file_, std::ios::binary);
      if (!file) {
        return ReportUsageError(
            absl::InvalidArgumentError(absl::StrCat("cannot open ", Quote(file_))), err);
      }
      in = &file;
    }
    Summary s;
    int64_t reported = 0;
    auto bad = [&](int64_t line_no, const std::string& job, const std::string& why) {
      ++s.bad;
      if (++reported <= kMaxReportedBadReceipts) {
        err << "bad: line " << line_no << (job.empty() ? "" : absl::StrCat(" (job ", job, ")"))
            << ": " << why << "\n";
      } else if (reported == kMaxReportedBadReceipts + 1) {
        err << "(more bad lines not listed)\n";
      }
    };
    std::string line;
    int64_t line_no = 0;
    uint64_t total_bytes = 0;
    char c;
    // Reads line by line with a bound on each line (a huge line is refused, not buffered).
    for (;;) {
      line.clear();
      bool eof = true, too_long = false;
      while (in->get(c)) {
        eof = false;
        if (c == '\n') break;
        if (line.size() >= kMaxReceiptLineBytes) {
          too_long = true;
          continue;
        }
        line.push_back(c);
      }
      if (eof && line.empty()) break;
      ++line_no;
      total_bytes += line.size() + 1;
      if (line_no > kMaxReceiptLines || total_bytes > kMaxReceiptFileBytes) {
        err << "error: " << Quote(file_) << " is over " << kMaxReceiptLines << " lines or "
            << kMaxReceiptFileBytes << " bytes; split it (--since/--until)\n";
        return kExitRpcError;
      }
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      ++s.rows;
      if (too_long) {
        bad(line_no, "", absl::StrCat("longer than ", kMaxReceiptLineBytes, " bytes"));
        continue;
      }
      auto row = ParseJson(line, 8);
      if (!row.ok()) {
        bad(line_no, "", std::string(row.status().message()));
        continue;
      }
      std::string job;
      if (row->is_object()) {
        auto it = row->find("job_id");
        if (it != row->end() && it->is_string()) job = LogSafe(it->get<std::string>());
      }
      bool has_receipt = false;
      v1::JobReceipt receipt;
      const std::string why =
          CheckLine(*row, trusted ? &*trusted : nullptr, &has_receipt, &receipt);
      if (!why.empty()) {
        bad(line_no, job, why);
        continue;
      }
      if (!has_receipt) {
        ++s.unsigned_rows;
        if (strict_) bad(line_no, job, "no receipt (--strict)");
        continue;
      }
      ++s.good;
      s.gateways.insert(receipt.gateway_id());
      NodeTotals& t = s.nodes[receipt.node_id()];
      ++t.receipts;
      t.units += receipt.units();
      if (std::isfinite(receipt.price_per_unit())) {
        t.signed_amount += static_cast<double>(receipt.units()) * receipt.price_per_unit();
      }
      auto amount = row->find("amount");
      if (amount != row->end() && amount->is_number()) t.paid += amount->get<double>();
    }
    const bool failed = s.bad > 0;
    if (global.json) {
      nlohmann::json j;
      j["rows"] = s.rows;
      j["verified"] = s.good;
      j["unsigned"] = s.unsigned_rows;
      j["bad"] = s.bad;
      j["gateways"] = s.gateways;
      for (const auto& [node, t] : s.nodes) {
        j["nodes"][node] = {{"receipts", t.receipts},
                            {"units", t.units},
                            {"signed_amount", t.signed_amount},
                            {"paid", t.paid}};
      }
      out << j.dump(2) << "\n";
    } else {
      if (!s.nodes.empty()) {
        std::vector<std::vector<std::string>> table = {
            {"NODE", "RECEIPTS", "UNITS", "SIGNED AMOUNT", "PAID"}};
        for (const auto& [node, t] : s.nodes) {
          table.push_back({LogSafe(node), absl::StrCat(t.receipts), absl::StrCat(t.units),
                           FormatPrice(t.signed_amount), FormatPrice(t.paid)});
        }
        out << FormatTable(table);
      }
      out << s.rows << " row" << (s.rows == 1 ? "" : "s") << ": " << s.good << " verified, "
          << s.unsigned_rows << " without a receipt, " << s.bad << " bad\n";
      out << (failed ? "FAILED" : "OK") << "\n";
    }
    return failed ? kExitRpcError : kExitOk;
  }

 private:
  std::string file_, keys_;
  bool strict_ = false;
};

}  // namespace

CommandPtr NewVerifyReceiptsCommand() { return std::make_unique<VerifyReceiptsCommand>(); }

}  // namespace switchyard::cli::internal
