// A Jinja2-subset interpreter for chat templates; see chat_template.h and docs/llm.md.
//
// Three stages: the lexer cuts the source into text and tags (applying whitespace control,
// trim_blocks and lstrip_blocks as Jinja does) and tokenizes the inside of each tag; the parser
// builds a statement tree, refusing every construct outside the subset with its line/column; the
// evaluator walks the tree. Errors inside the parser and evaluator are thrown as TemplateError and
// turned into a Status at the two public entry points, because threading StatusOr through every
// recursive expression node would triple the code without making it safer.
#include "runner/llm/chat_template.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::llm {

using nlohmann::json;

namespace {

struct TemplateError {
  absl::Status status;
};

[[noreturn]] void Fail(absl::StatusCode code, std::string msg) {
  throw TemplateError{absl::Status(code, std::move(msg))};
}
[[noreturn]] void Invalid(std::string msg) {
  Fail(absl::StatusCode::kInvalidArgument, std::move(msg));
}

struct Pos {
  int line = 1;
  int col = 1;
};
std::string At(Pos p) { return absl::StrCat(" (line ", p.line, ", column ", p.col, ")"); }

// ---------------------------------------------------------------------------------------------
// Lexer

enum class Tok { kName, kString, kInt, kFloat, kOp, kEnd };

struct Token {
  Tok kind;
  std::string text;  // name, operator, or the decoded string literal
  int64_t int_value = 0;
  double float_value = 0;
  Pos pos;
};

enum class SegKind { kText, kExpr, kStmt, kComment };

struct Segment {
  SegKind kind;
  std::string text;           // kText only
  std::vector<Token> tokens;  // kExpr / kStmt, ending with kEnd
  Pos pos;
  bool trim_left = false;   // `{%-`: strip whitespace before
  bool trim_right = false;  // `-%}`: strip whitespace after
};

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  std::vector<Segment> Run() {
    std::vector<Segment> segs;
    std::string text;
    Pos text_pos = Here();
    while (i_ < src_.size()) {
      if (src_[i_] == '{' && i_ + 1 < src_.size() &&
          (src_[i_ + 1] == '{' || src_[i_ + 1] == '%' || src_[i_ + 1] == '#')) {
        segs.push_back({SegKind::kText, std::move(text), {}, text_pos});
        text.clear();
        segs.push_back(Tag());
        text_pos = Here();
        continue;
      }
      text.push_back(Advance());
    }
    segs.push_back({SegKind::kText, std::move(text), {}, text_pos});
    ApplyWhitespaceControl(segs);
    return segs;
  }

 private:
  Pos Here() const { return {line_, col_}; }
  char Advance() {
    const char c = src_[i_++];
    if (c == '\n') {
      ++line_;
      col_ = 1;
    } else if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
      ++col_;  // columns count characters, not UTF-8 continuation bytes
    }
    return c;
  }
  bool StartsWith(std::string_view s) const { return src_.substr(i_).substr(0, s.size()) == s; }

  Segment Tag() {
    Segment seg;
    seg.pos = Here();
    const char open = src_[i_ + 1];
    Advance();
    Advance();
    if (i_ < src_.size() && src_[i_] == '-') {
      seg.trim_left = true;
      Advance();
    } else if (i_ < src_.size() && src_[i_] == '+' && open != '{') {
      Advance();  // `{%+` disables lstrip_blocks for this tag
      seg.trim_left = false;
      no_lstrip_.insert(seg.pos.line * 1'000'000 + seg.pos.col);
    }
    if (open == '#') {
      seg.kind = SegKind::kComment;
      while (true) {
        if (i_ >= src_.size()) Invalid("unterminated comment `{#`" + At(seg.pos));
        if (StartsWith("-#}")) {
          seg.trim_right = true;
          Advance(), Advance(), Advance();
          break;
        }
        if (StartsWith("#}")) {
          Advance(), Advance();
          break;
        }
        Advance();
      }
      return seg;
    }
    seg.kind = open == '{' ? SegKind::kExpr : SegKind::kStmt;
    const char close = open == '{' ? '}' : '%';
    while (true) {
      SkipSpace();
      if (i_ >= src_.size()) {
        Invalid(std::string("unterminated tag `") + (open == '{' ? "{{" : "{%") + "`" +
                At(seg.pos));
      }
      if (src_[i_] == '-' && i_ + 2 < src_.size() + 0 && src_[i_ + 1] == close &&
          src_[i_ + 2] == '}') {
        seg.trim_right = true;
        Advance(), Advance(), Advance();
        break;
      }
      if (src_[i_] == '+' && close == '%' && i_ + 2 < src_.size() && src_[i_ + 1] == '%' &&
          src_[i_ + 2] == '}') {
        Advance(), Advance(), Advance();
        break;
      }
      if (src_[i_] == close && i_ + 1 < src_.size() && src_[i_ + 1] == '}') {
        Advance(), Advance();
        break;
      }
      seg.tokens.push_back(Next());
    }
    seg.tokens.push_back({Tok::kEnd, "end of tag", 0, 0, Here()});
    return seg;
  }

  void SkipSpace() {
    while (i_ < src_.size() &&
           (src_[i_] == ' ' || src_[i_] == '\t' || src_[i_] == '\n' || src_[i_] == '\r')) {
      Advance();
    }
  }

  Token Next() {
    Token t;
    t.pos = Here();
    const char c = src_[i_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      t.kind = Tok::kName;
      while (i_ < src_.size() &&
             (std::isalnum(static_cast<unsigned char>(src_[i_])) || src_[i_] == '_')) {
        t.text.push_back(Advance());
      }
      return t;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      std::string num;
      bool is_float = false;
      while (i_ < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[i_])) || src_[i_] == '_' ||
              (src_[i_] == '.' && !is_float && i_ + 1 < src_.size() &&
               std::isdigit(static_cast<unsigned char>(src_[i_ + 1]))))) {
        if (src_[i_] == '.') is_float = true;
        const char d = Advance();
        if (d != '_') num.push_back(d);
      }
      if (is_float) {
        t.kind = Tok::kFloat;
        t.float_value = std::strtod(num.c_str(), nullptr);
      } else {
        t.kind = Tok::kInt;
        auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), t.int_value);
        if (ec != std::errc()) Invalid("integer literal out of range" + At(t.pos));
      }
      return t;
    }
    if (c == '\'' || c == '"') {
      t.kind = Tok::kString;
      Advance();
      while (true) {
        if (i_ >= src_.size()) Invalid("unterminated string literal" + At(t.pos));
        const char d = Advance();
        if (d == c) break;
        if (d == '\\') {
          if (i_ >= src_.size()) Invalid("unterminated string literal" + At(t.pos));
          const char e = Advance();
          switch (e) {
            case 'n':
              t.text.push_back('\n');
              break;
            case 't':
              t.text.push_back('\t');
              break;
            case 'r':
              t.text.push_back('\r');
              break;
            case '\\':
              t.text.push_back('\\');
              break;
            case '\'':
              t.text.push_back('\'');
              break;
            case '"':
              t.text.push_back('"');
              break;
            case '\n':
              break;  // a line continuation, as in Python
            default:
              // Python keeps unknown escapes as written (`\d` stays two characters).
              t.text.push_back('\\');
              t.text.push_back(e);
          }
          continue;
        }
        t.text.push_back(d);
      }
      return t;
    }
    static constexpr std::string_view kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                                "/",  "%",  "~",  "<",  ">",  "(",  ")", "[", "]",
                                                "{",  "}",  ",",  ".",  ":",  "|",  "="};
    for (std::string_view op : kOps) {
      if (StartsWith(op)) {
        t.kind = Tok::kOp;
        t.text = std::string(op);
        for (size_t k = 0; k < op.size(); ++k) Advance();
        return t;
      }
    }
    Invalid(std::string("unexpected character `") + c + "`" + At(t.pos));
  }

  // Jinja's whitespace rules, with transformers' trim_blocks and lstrip_blocks: `-` strips all
  // whitespace on its side; a block or comment tag eats the one newline after it; a block or
  // comment tag that starts a line (only spaces/tabs before it) eats those spaces/tabs.
  void ApplyWhitespaceControl(std::vector<Segment>& segs) {
    for (size_t k = 0; k < segs.size(); ++k) {
      Segment& s = segs[k];
      if (s.kind == SegKind::kText) continue;
      const bool block = s.kind == SegKind::kStmt || s.kind == SegKind::kComment;
      Segment& before = segs[k - 1];  // the lexer puts a text segment around every tag
      Segment& after = segs[k + 1];
      if (s.trim_left) {
        while (!before.text.empty() && IsSpace(before.text.back())) before.text.pop_back();
      } else if (block && !no_lstrip_.count(s.pos.line * 1'000'000 + s.pos.col)) {
        const size_t nl = before.text.find_last_of('\n');
        const size_t start = nl == std::string::npos ? 0 : nl + 1;
        const bool line_start = nl != std::string::npos || k == 1;
        if (line_start && before.text.find_first_not_of(" \t", start) == std::string::npos) {
          before.text.resize(start);
        }
      }
      if (s.trim_right) {
        size_t n = 0;
        while (n < after.text.size() && IsSpace(after.text[n])) ++n;
        after.text.erase(0, n);
      } else if (block) {
        if (after.text.rfind("\n", 0) == 0) {
          after.text.erase(0, 1);
        } else if (after.text.rfind("\r\n", 0) == 0) {
          after.text.erase(0, 2);
        }
      }
    }
  }
  static bool IsSpace(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  }

  std::string_view src_;
  size_t i_ = 0;
  int line_ = 1;
  int col_ = 1;
  std::set<int64_t> no_lstrip_;
};

// ---------------------------------------------------------------------------------------------
// Syntax tree

enum class EK {
  kLiteral,
  kName,
  kList,
  kDict,
  kAttr,
  kIndex,
  kSlice,
  kCall,
  kFilter,
  kTest,
  kUnary,
  kBinary,
  kAnd,
  kOr,
  kNot,
  kCond,
};

struct Expr {
  EK kind;
  Pos pos;
  json literal;                             // kLiteral
  std::string name;                         // name, attribute, filter, test, operator
  std::vector<std::unique_ptr<Expr>> args;  // operands / positional arguments / items
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;  // `is not`, `not in`
  bool has_slice[3] = {false, false, false};
};
using ExprPtr = std::unique_ptr<Expr>;

enum class SK { kText, kOutput, kIf, kFor, kSet };

struct Stmt {
  SK kind;
  Pos pos;
  std::string text;  // kText
  ExprPtr expr;      // output / for iterable / set value
  std::vector<std::pair<ExprPtr, std::vector<std::unique_ptr<Stmt>>>> branches;  // if/elif
  std::vector<std::unique_ptr<Stmt>> else_body;
  std::vector<std::string> targets;         // for variables; set: name [, attribute]
  std::vector<std::unique_ptr<Stmt>> body;  // for
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// ---------------------------------------------------------------------------------------------
// Parser

// The filters, tests, functions and methods the evaluator implements; any other name is refused
// at parse time so that a template either loads and can run, or is refused up front.
const std::set<std::string, std::less<>>& KnownFilters() {
  static const auto* const k = new std::set<std::string, std::less<>>{
      "capitalize", "count", "d",     "default", "first",  "items", "join", "last",
      "length",     "list",  "lower", "string",  "tojson", "trim",  "upper"};
  return *k;
}
const std::set<std::string, std::less<>>& KnownTests() {
  static const auto* const k = new std::set<std::string, std::less<>>{
      "boolean", "defined",  "divisibleby", "eq",      "equalto",  "even",   "false",
      "float",   "integer",  "iterable",    "mapping", "none",     "number", "odd",
      "sameas",  "sequence", "string",      "true",    "undefined"};
  return *k;
}
const std::set<std::string, std::less<>>& KnownFunctions() {
  static const auto* const k = new std::set<std::string, std::less<>>{
      "namespace", "raise_exception", "range", "strftime_now"};
  return *k;
}
const std::set<std::string, std::less<>>& KnownMethods() {
  static const auto* const k = new std::set<std::string, std::less<>>{
      "endswith", "get",   "items",      "keys",  "lower", "lstrip", "replace",
      "rstrip",   "split", "startswith", "strip", "upper", "values"};
  return *k;
}

class Parser {
 public:
  Parser(std::vector<Segment> segs, int max_nesting)
      : segs_(std::move(segs)), max_nesting_(max_nesting) {}

  Body ParseAll() {
    Body body;
    std::string end = ParseBody(body, {});
    if (!end.empty()) Invalid("unexpected `{% " + end + " %}`" + At(end_pos_));
    return body;
  }

 private:
  // Parses statements into `out` until a block tag whose keyword is in `stops`; returns that
  // keyword (its tokens are left in tok_ for the caller) or "" at the end of the template.
  std::string ParseBody(Body& out, const std::set<std::string>& stops) {
    while (seg_ < segs_.size()) {
      Segment& s = segs_[seg_++];
      switch (s.kind) {
        case SegKind::kComment:
          break;
        case SegKind::kText:
          if (!s.text.empty()) {
            auto st = std::make_unique<Stmt>();
            st->kind = SK::kText;
            st->pos = s.pos;
            st->text = std::move(s.text);
            out.push_back(std::move(st));
          }
          break;
        case SegKind::kExpr: {
          Start(s);
          auto st = std::make_unique<Stmt>();
          st->kind = SK::kOutput;
          st->pos = s.pos;
          st->expr = ParseExpr();
          ExpectEnd();
          out.push_back(std::move(st));
          break;
        }
        case SegKind::kStmt: {
          Start(s);
          const Token& kw = Peek();
          if (kw.kind != Tok::kName) Invalid("expected a statement keyword" + At(kw.pos));
          if (stops.count(kw.text)) {
            end_pos_ = kw.pos;
            return kw.text;
          }
          out.push_back(ParseStatement());
          break;
        }
      }
    }
    return "";
  }

  StmtPtr ParseStatement() {
    const Token kw = Take();
    auto st = std::make_unique<Stmt>();
    st->pos = kw.pos;
    Nest guard(this, kw.pos);
    if (kw.text == "if") {
      st->kind = SK::kIf;
      ExprPtr cond = ParseExpr();
      ExpectEnd();
      while (true) {
        Body body;
        const std::string end = ParseBody(body, {"elif", "else", "endif"});
        st->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") {
          Take();
          cond = ParseExpr();
          ExpectEnd();
          continue;
        }
        if (end == "else") {
          Take();
          ExpectEnd();
          if (ParseBody(st->else_body, {"endif"}) != "endif") Unclosed("if", kw.pos);
          Take();
          ExpectEnd();
          break;
        }
        if (end != "endif") Unclosed("if", kw.pos);
        Take();
        ExpectEnd();
        break;
      }
      return st;
    }
    if (kw.text == "for") {
      st->kind = SK::kFor;
      do {
        const Token& v = Take();
        if (v.kind != Tok::kName) Invalid("expected a loop variable name" + At(v.pos));
        st->targets.push_back(v.text);
      } while (TakeOp(","));
      if (st->targets.size() > 8) Invalid("too many loop variables" + At(kw.pos));
      ExpectName("in");
      // The iterable is parsed without the conditional expression so that `for x in xs if c`
      // reaches the refusal below instead of being read as `xs if c else ...`.
      st->expr = ParseOr();
      if (Peek().kind == Tok::kName && Peek().text == "if") {
        Invalid("loop filters (`{% for x in xs if cond %}`) are not supported" + At(Peek().pos));
      }
      if (Peek().kind == Tok::kName && Peek().text == "recursive") {
        Invalid("recursive loops are not supported" + At(Peek().pos));
      }
      ExpectEnd();
      const std::string end = ParseBody(st->body, {"endfor", "else"});
      if (end == "else") Invalid("`{% for %}...{% else %}` is not supported" + At(end_pos_));
      if (end != "endfor") Unclosed("for", kw.pos);
      Take();
      ExpectEnd();
      return st;
    }
    if (kw.text == "set") {
      st->kind = SK::kSet;
      const Token& v = Take();
      if (v.kind != Tok::kName) Invalid("expected a variable name after `set`" + At(v.pos));
      st->targets.push_back(v.text);
      if (TakeOp(".")) {
        const Token& a = Take();
        if (a.kind != Tok::kName) Invalid("expected an attribute name" + At(a.pos));
        st->targets.push_back(a.text);
      }
      if (Peek().kind == Tok::kEnd) {
        Invalid("block assignment (`{% set x %}...{% endset %}`) is not supported" + At(kw.pos));
      }
      if (Peek().kind == Tok::kOp && Peek().text == ",") {
        Invalid("tuple assignment in `{% set %}` is not supported" + At(Peek().pos));
      }
      if (!TakeOp("=")) Invalid("expected `=` in `{% set %}`" + At(Peek().pos));
      st->expr = ParseExpr();
      ExpectEnd();
      return st;
    }
    static const std::set<std::string> kKnown = {
        "macro",     "call",       "filter",     "include", "import",   "from",
        "extends",   "block",      "raw",        "with",    "break",    "continue",
        "do",        "generation", "autoescape", "trans",   "endmacro", "endcall",
        "endfilter", "endblock",   "endraw",     "endwith", "endset",   "endgeneration"};
    if (kKnown.count(kw.text)) {
      Invalid("`{% " + kw.text + " %}` is not supported" + At(kw.pos));
    }
    if (kw.text == "elif" || kw.text == "else" || kw.text == "endif" || kw.text == "endfor") {
      Invalid("unexpected `{% " + kw.text + " %}`" + At(kw.pos));
    }
    Invalid("unknown statement `{% " + kw.text + " %}`" + At(kw.pos));
  }

  [[noreturn]] void Unclosed(const std::string& what, Pos p) {
    Invalid("`{% " + what + " %}` is never closed" + At(p));
  }

  // Expression grammar, loosest first: conditional, or, and, not, comparison/in/is, + -, ~,
  // * / // %, unary -, postfix (attribute, index, slice, call, filter).
  ExprPtr ParseExpr() {
    Nest guard(this, Peek().pos);
    ExprPtr e = ParseOr();
    if (Peek().kind == Tok::kName && Peek().text == "if") {
      auto c = Make(EK::kCond, Take().pos);
      c->args.push_back(std::move(e));
      c->args.push_back(ParseOr());
      if (Peek().kind == Tok::kName && Peek().text == "else") {
        Take();
        c->args.push_back(ParseExpr());
      }
      return c;
    }
    return e;
  }
  ExprPtr ParseOr() {
    ExprPtr e = ParseAnd();
    Chain chain(this);
    while (Peek().kind == Tok::kName && Peek().text == "or") {
      chain.Add(Peek().pos);
      auto o = Make(EK::kOr, Take().pos);
      o->args.push_back(std::move(e));
      o->args.push_back(ParseAnd());
      e = std::move(o);
    }
    return e;
  }
  ExprPtr ParseAnd() {
    ExprPtr e = ParseNot();
    Chain chain(this);
    while (Peek().kind == Tok::kName && Peek().text == "and") {
      chain.Add(Peek().pos);
      auto o = Make(EK::kAnd, Take().pos);
      o->args.push_back(std::move(e));
      o->args.push_back(ParseNot());
      e = std::move(o);
    }
    return e;
  }
  ExprPtr ParseNot() {
    if (Peek().kind == Tok::kName && Peek().text == "not") {
      Nest guard(this, Peek().pos);
      auto n = Make(EK::kNot, Take().pos);
      n->args.push_back(ParseNot());
      return n;
    }
    return ParseCompare();
  }
  ExprPtr ParseCompare() {
    ExprPtr e = ParseAdd();
    Chain chain(this);
    while (true) {
      chain.Add(Peek().pos);
      const Token& t = Peek();
      if (t.kind == Tok::kOp && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                 t.text == ">" || t.text == "<=" || t.text == ">=")) {
        auto b = Make(EK::kBinary, t.pos);
        b->name = Take().text;
        b->args.push_back(std::move(e));
        b->args.push_back(ParseAdd());
        e = std::move(b);
      } else if (t.kind == Tok::kName && t.text == "in") {
        auto b = Make(EK::kBinary, Take().pos);
        b->name = "in";
        b->args.push_back(std::move(e));
        b->args.push_back(ParseAdd());
        e = std::move(b);
      } else if (t.kind == Tok::kName && t.text == "not" && PeekAt(1).kind == Tok::kName &&
                 PeekAt(1).text == "in") {
        auto b = Make(EK::kBinary, Take().pos);
        Take();
        b->name = "in";
        b->negated = true;
        b->args.push_back(std::move(e));
        b->args.push_back(ParseAdd());
        e = std::move(b);
      } else if (t.kind == Tok::kName && t.text == "is") {
        auto b = Make(EK::kTest, Take().pos);
        if (Peek().kind == Tok::kName && Peek().text == "not") {
          Take();
          b->negated = true;
        }
        const Token& name = Take();
        // `is none`, `is true`, `is false` arrive as names (Jinja's lowercase constants).
        if (name.kind != Tok::kName) Invalid("expected a test name after `is`" + At(name.pos));
        if (!KnownTests().count(name.text)) {
          Invalid("the test `" + name.text + "` is not supported" + At(name.pos));
        }
        b->name = name.text;
        b->args.push_back(std::move(e));
        if (TakeOp("(")) ParseArgs(*b);
        e = std::move(b);
      } else {
        return e;
      }
    }
  }
  ExprPtr ParseAdd() {
    ExprPtr e = ParseConcat();
    Chain chain(this);
    while (Peek().kind == Tok::kOp && (Peek().text == "+" || Peek().text == "-")) {
      chain.Add(Peek().pos);
      auto b = Make(EK::kBinary, Peek().pos);
      b->name = Take().text;
      b->args.push_back(std::move(e));
      b->args.push_back(ParseConcat());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr ParseConcat() {
    ExprPtr e = ParseMul();
    Chain chain(this);
    while (Peek().kind == Tok::kOp && Peek().text == "~") {
      chain.Add(Peek().pos);
      auto b = Make(EK::kBinary, Peek().pos);
      b->name = Take().text;
      b->args.push_back(std::move(e));
      b->args.push_back(ParseMul());
      e = std::move(b);
    }
    return e;
  }
  ExprPtr ParseMul() {
    ExprPtr e = ParseUnary();
    Chain chain(this);
    while (Peek().kind == Tok::kOp && (Peek().text == "*" || Peek().text == "/" ||
                                       Peek().text == "//" || Peek().text == "%")) {
      chain.Add(Peek().pos);
      auto b = Make(EK::kBinary, Peek().pos);
      b->name = Take().text;
      b->args.push_back(std::move(e));
      b->args.push_back(ParseUnary());
      e = std::move(b);
    }
    if (Peek().kind == Tok::kOp && Peek().text == "**") {
      Invalid("the `**` operator is not supported" + At(Peek().pos));
    }
    return e;
  }
  ExprPtr ParseUnary() {
    if (Peek().kind == Tok::kOp && (Peek().text == "-" || Peek().text == "+")) {
      Nest guard(this, Peek().pos);
      auto u = Make(EK::kUnary, Peek().pos);
      u->name = Take().text;
      u->args.push_back(ParseUnary());
      return u;
    }
    return ParsePostfix(ParsePrimary());
  }
  ExprPtr ParsePrimary() {
    const Token t = Take();
    switch (t.kind) {
      case Tok::kString: {
        std::string s = t.text;
        while (Peek().kind == Tok::kString) s += Take().text;  // adjacent literals join
        auto e = Make(EK::kLiteral, t.pos);
        e->literal = s;
        return e;
      }
      case Tok::kInt: {
        auto e = Make(EK::kLiteral, t.pos);
        e->literal = t.int_value;
        return e;
      }
      case Tok::kFloat: {
        auto e = Make(EK::kLiteral, t.pos);
        e->literal = t.float_value;
        return e;
      }
      case Tok::kName: {
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          auto e = Make(EK::kLiteral, t.pos);
          e->literal = t.text == "true" || t.text == "True";
          return e;
        }
        if (t.text == "none" || t.text == "None") {
          auto e = Make(EK::kLiteral, t.pos);
          e->literal = nullptr;
          return e;
        }
        if (t.text == "lambda") Invalid("lambdas are not supported" + At(t.pos));
        auto e = Make(EK::kName, t.pos);
        e->name = t.text;
        return e;
      }
      case Tok::kOp:
        if (t.text == "(") {
          Nest guard(this, t.pos);
          ExprPtr e = ParseExpr();
          if (Peek().kind == Tok::kOp && Peek().text == ",") {
            Invalid("tuples are not supported" + At(Peek().pos));
          }
          ExpectOp(")");
          return e;
        }
        if (t.text == "[") {
          Nest guard(this, t.pos);
          auto e = Make(EK::kList, t.pos);
          while (!TakeOp("]")) {
            e->args.push_back(ParseExpr());
            if (!TakeOp(",")) {
              ExpectOp("]");
              break;
            }
          }
          return e;
        }
        if (t.text == "{") {
          Nest guard(this, t.pos);
          auto e = Make(EK::kDict, t.pos);
          while (!TakeOp("}")) {
            e->args.push_back(ParseExpr());
            ExpectOp(":");
            e->args.push_back(ParseExpr());
            if (!TakeOp(",")) {
              ExpectOp("}");
              break;
            }
          }
          return e;
        }
        break;
      default:
        break;
    }
    Invalid("unexpected `" + t.text + "`" + At(t.pos));
  }
  ExprPtr ParsePostfix(ExprPtr e) {
    Chain chain(this);
    while (true) {
      const Token& t = Peek();
      if (t.kind != Tok::kOp) return e;
      chain.Add(t.pos);
      if (t.text == ".") {
        Take();
        const Token& name = Take();
        if (name.kind != Tok::kName && name.kind != Tok::kInt) {
          Invalid("expected an attribute name after `.`" + At(name.pos));
        }
        auto a = Make(EK::kAttr, t.pos);
        a->name = name.kind == Tok::kName ? name.text : std::to_string(name.int_value);
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (t.text == "[") {
        Nest guard(this, t.pos);
        const Pos p = Take().pos;
        ExprPtr parts[3];
        bool slice = false;
        bool has[3] = {false, false, false};
        for (int k = 0; k < 3; ++k) {
          if (!(Peek().kind == Tok::kOp && (Peek().text == ":" || Peek().text == "]"))) {
            parts[k] = ParseExpr();
            has[k] = true;
          }
          if (k < 2 && TakeOp(":")) {
            slice = true;
            continue;
          }
          break;
        }
        ExpectOp("]");
        if (!slice) {
          if (!has[0]) Invalid("empty subscript `[]`" + At(p));
          auto x = Make(EK::kIndex, p);
          x->args.push_back(std::move(e));
          x->args.push_back(std::move(parts[0]));
          e = std::move(x);
        } else {
          auto x = Make(EK::kSlice, p);
          x->args.push_back(std::move(e));
          for (int k = 0; k < 3; ++k) {
            x->has_slice[k] = has[k];
            x->args.push_back(std::move(parts[k]));
          }
          e = std::move(x);
        }
      } else if (t.text == "(") {
        Nest guard(this, t.pos);
        if (e->kind == EK::kName && !KnownFunctions().count(e->name)) {
          Invalid("the function `" + e->name + "` is not supported" + At(e->pos));
        }
        if (e->kind == EK::kAttr && !KnownMethods().count(e->name)) {
          Invalid("the method `" + e->name + "` is not supported" + At(e->pos));
        }
        if (e->kind != EK::kName && e->kind != EK::kAttr) {
          Invalid("only functions and methods can be called" + At(t.pos));
        }
        auto c = Make(EK::kCall, Take().pos);
        c->args.push_back(std::move(e));
        ParseArgs(*c);
        e = std::move(c);
      } else if (t.text == "|") {
        Nest guard(this, t.pos);
        Take();
        const Token& name = Take();
        if (name.kind != Tok::kName) Invalid("expected a filter name after `|`" + At(name.pos));
        if (!KnownFilters().count(name.text)) {
          Invalid("the filter `" + name.text + "` is not supported" + At(name.pos));
        }
        auto f = Make(EK::kFilter, name.pos);
        f->name = name.text;
        f->args.push_back(std::move(e));
        if (TakeOp("(")) ParseArgs(*f);
        e = std::move(f);
      } else {
        return e;
      }
    }
  }
  // After `(`: positional then keyword arguments, up to `)`. Positional ones are appended to
  // e.args after whatever it already holds.
  void ParseArgs(Expr& e) {
    while (!TakeOp(")")) {
      if (Peek().kind == Tok::kOp && (Peek().text == "*" || Peek().text == "**")) {
        Invalid("`*args` / `**kwargs` are not supported" + At(Peek().pos));
      }
      if (Peek().kind == Tok::kName && PeekAt(1).kind == Tok::kOp && PeekAt(1).text == "=") {
        std::string name = Take().text;
        Take();
        e.kwargs.emplace_back(std::move(name), ParseExpr());
      } else {
        if (!e.kwargs.empty()) Invalid("positional argument after keyword" + At(Peek().pos));
        e.args.push_back(ParseExpr());
      }
      if (!TakeOp(",")) {
        ExpectOp(")");
        break;
      }
    }
  }

  struct Nest {
    Nest(Parser* p, Pos pos) : parser(p) {
      if (++parser->depth_ > parser->max_nesting_) {
        Invalid(absl::StrCat("nesting deeper than ", parser->max_nesting_, At(pos)));
      }
    }
    ~Nest() { --parser->depth_; }
    Parser* parser;
  };

  // A left-associative chain (`a + b + c`, `x.y.z`, `f | g | h`) is parsed in a loop but
  // evaluated recursively, one level per link: each link counts as one level of nesting until the
  // chain's parse ends, so a 100,000-term sum is refused instead of overflowing the stack later.
  struct Chain {
    explicit Chain(Parser* p) : parser(p) {}
    void Add(Pos pos) {
      ++links;
      if (++parser->depth_ > parser->max_nesting_) {
        Invalid(absl::StrCat("nesting deeper than ", parser->max_nesting_, At(pos)));
      }
    }
    ~Chain() { parser->depth_ -= links; }
    Parser* parser;
    int links = 0;
  };

  ExprPtr Make(EK k, Pos p) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->pos = p;
    return e;
  }
  void Start(Segment& s) {
    tok_ = &s.tokens;
    ti_ = 0;
  }
  const Token& Peek() const { return (*tok_)[std::min(ti_, tok_->size() - 1)]; }
  const Token& PeekAt(size_t k) const { return (*tok_)[std::min(ti_ + k, tok_->size() - 1)]; }
  const Token& Take() {
    const Token& t = Peek();
    if (t.kind != Tok::kEnd) ++ti_;
    return t;
  }
  bool TakeOp(std::string_view op) {
    if (Peek().kind == Tok::kOp && Peek().text == op) {
      ++ti_;
      return true;
    }
    return false;
  }
  void ExpectOp(std::string_view op) {
    if (!TakeOp(op)) {
      Invalid("expected `" + std::string(op) + "`, found `" + Peek().text + "`" + At(Peek().pos));
    }
  }
  void ExpectName(std::string_view name) {
    if (Peek().kind != Tok::kName || Peek().text != name) {
      Invalid("expected `" + std::string(name) + "`, found `" + Peek().text + "`" + At(Peek().pos));
    }
    Take();
  }
  void ExpectEnd() {
    if (Peek().kind != Tok::kEnd) {
      Invalid("unexpected `" + Peek().text + "` (expected the end of the tag)" + At(Peek().pos));
    }
  }

  std::vector<Segment> segs_;
  size_t seg_ = 0;
  std::vector<Token>* tok_ = nullptr;
  size_t ti_ = 0;
  Pos end_pos_;
  int depth_ = 0;
  int max_nesting_;
};

}  // namespace

struct ChatTemplate::Impl {
  Body body;
};

namespace {

// ---------------------------------------------------------------------------------------------
// Evaluator

// A value: JSON data, or Jinja's undefined (a missing variable, attribute or key). Variables and
// their parts are borrowed (`ref` points into a scope) rather than copied, so that reading
// `messages` in a loop costs nothing however long the conversation; a borrowed value lives only
// within one expression, and scopes change only between expressions (Take copies first).
struct Value {
  bool undefined = false;
  const json* ref = nullptr;
  json own;
  const json& j() const { return ref ? *ref : own; }
  json Take() && { return ref ? *ref : std::move(own); }
  static Value Undef() {
    Value v;
    v.undefined = true;
    return v;
  }
  static Value Of(json x) {
    Value v;
    v.own = std::move(x);
    return v;
  }
  static Value Ref(const json& x) {
    Value v;
    v.ref = &x;
    return v;
  }
  // A part of `parent`: borrowed when the parent is, copied when the parent is a temporary.
  static Value Part(const Value& parent, const json& x) { return parent.ref ? Ref(x) : Of(x); }
};

std::string TypeName(const Value& v) {
  if (v.undefined) return "undefined";
  switch (v.j().type()) {
    case json::value_t::null:
      return "none";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "float";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "list";
    case json::value_t::object:
      return "mapping";
    default:
      return "value";
  }
}

bool Truthy(const Value& v) {
  if (v.undefined) return false;
  const json& j = v.j();
  switch (j.type()) {
    case json::value_t::null:
      return false;
    case json::value_t::boolean:
      return j.get<bool>();
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return j.get<int64_t>() != 0;
    case json::value_t::number_float:
      return j.get<double>() != 0.0;
    case json::value_t::string:
      return !j.get_ref<const std::string&>().empty();
    case json::value_t::array:
    case json::value_t::object:
      return !j.empty();
    default:
      return false;
  }
}

// Python's repr of a float for the shortest round-trip digits.
std::string FormatFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, p);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

// JSON.stringify / json.dumps(ensure_ascii=False) string escaping.
void AppendJsonString(std::string& out, const std::string& s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

// `tojson` as transformers and @huggingface/jinja write it: ", " and ": " separators, or with
// indent N newlines, "," and ": ".
void ToJson(std::string& out, const json& j, int indent, int depth) {
  switch (j.type()) {
    case json::value_t::string:
      AppendJsonString(out, j.get_ref<const std::string&>());
      return;
    case json::value_t::number_float:
      out += FormatFloat(j.get<double>());
      return;
    case json::value_t::array:
    case json::value_t::object: {
      const bool obj = j.is_object();
      out.push_back(obj ? '{' : '[');
      if (j.empty()) {
        out.push_back(obj ? '}' : ']');
        return;
      }
      const std::string pad =
          indent > 0 ? "\n" + std::string(size_t(indent) * (depth + 1), ' ') : std::string();
      bool first = true;
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!first) out += indent > 0 ? "," : ", ";
        first = false;
        out += pad;
        if (obj) {
          AppendJsonString(out, it.key());
          out += ": ";
        }
        ToJson(out, it.value(), indent, depth + 1);
      }
      if (indent > 0) out += "\n" + std::string(size_t(indent) * depth, ' ');
      out.push_back(obj ? '}' : ']');
      return;
    }
    default:
      out += j.dump();
  }
}

// How `{{ x }}` prints a value: Python's str().
std::string Str(const Value& v) {
  if (v.undefined) return "";
  const json& j = v.j();
  switch (j.type()) {
    case json::value_t::null:
      return "None";
    case json::value_t::boolean:
      return j.get<bool>() ? "True" : "False";
    case json::value_t::string:
      return j.get<std::string>();
    case json::value_t::number_float:
      return FormatFloat(j.get<double>());
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return j.dump();
    default: {
      std::string out;
      ToJson(out, j, 0, 0);
      return out;
    }
  }
}

bool IsNumber(const json& j) { return j.is_number() && !j.is_boolean(); }

int64_t Utf8Length(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Splits a UTF-8 string into its characters (slices and reversals work on characters).
std::vector<std::string> Utf8Chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xC0) == 0x80) ++n;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool IsPySpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string Strip(const std::string& s, bool left, bool right,
                  const std::optional<std::string>& chars) {
  auto in_set = [&](char c) { return chars ? chars->find(c) != std::string::npos : IsPySpace(c); };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && in_set(s[b])) ++b;
  if (right)
    while (e > b && in_set(s[e - 1])) --e;
  return s.substr(b, e - b);
}

class Renderer {
 public:
  Renderer(const ChatTemplateLimits& limits, int64_t now) : limits_(limits), now_(now) {}

  std::string Run(const Body& body, const json& context) {
    scopes_.emplace_back();
    for (auto it = context.begin(); it != context.end(); ++it) {
      scopes_.back()[it.key()] = it.value();
    }
    Exec(body);
    return std::move(out_);
  }

 private:
  void Step() {
    if (++steps_ > limits_.max_steps) {
      Fail(absl::StatusCode::kResourceExhausted,
           absl::StrCat("chat template: more than ", limits_.max_steps, " evaluation steps"));
    }
  }
  // Work proportional to data size (copying a list, scanning a string) counts as steps too, one
  // per 64 bytes, so a small template cannot spin for hours over a large context within the
  // loop cap.
  void Charge(uint64_t bytes) {
    steps_ += bytes / 64;
    Step();
  }
  void ChargeCopy(const json& j) {
    uint64_t budget = limits_.max_steps;  // the walk itself stops once the cap is reached
    Charge(Weight(j, budget));
  }
  static uint64_t Weight(const json& j, uint64_t& budget) {
    uint64_t w = 64;
    if (j.is_string()) w += j.get_ref<const std::string&>().size();
    if (j.is_array() || j.is_object()) {
      for (auto it = j.begin(); it != j.end() && budget > 0; ++it) {
        if (j.is_object()) w += it.key().size();
        w += Weight(it.value(), budget);
      }
    }
    budget = budget > w / 64 ? budget - w / 64 : 0;
    return w;
  }
  void Emit(const std::string& s) {
    if (out_.size() + s.size() > limits_.max_output_bytes) {
      Fail(absl::StatusCode::kResourceExhausted,
           absl::StrCat("chat template: output larger than ", limits_.max_output_bytes, " bytes"));
    }
    out_ += s;
  }
  json CheckString(std::string s, Pos p) {
    Charge(s.size());
    if (s.size() > limits_.max_string_bytes) {
      Fail(absl::StatusCode::kResourceExhausted,
           absl::StrCat("chat template: a string longer than ", limits_.max_string_bytes, " bytes",
                        At(p)));
    }
    return json(std::move(s));
  }

  void Exec(const Body& body) {
    for (const StmtPtr& s : body) Exec(*s);
  }

  void Exec(const Stmt& s) {
    Step();
    switch (s.kind) {
      case SK::kText:
        Emit(s.text);
        return;
      case SK::kOutput:
        Emit(Str(Eval(*s.expr)));
        return;
      case SK::kIf:
        for (const auto& [cond, body] : s.branches) {
          if (Truthy(Eval(*cond))) {
            Exec(body);
            return;
          }
        }
        Exec(s.else_body);
        return;
      case SK::kSet: {
        Value v = Eval(*s.expr);
        if (s.targets.size() == 1) {
          if (v.undefined) {
            // Stored as null: this JSON-valued scope has no undefined (documented).
            scopes_.back()[s.targets[0]] = nullptr;
          } else {
            json value = std::move(v).Take();
            scopes_.back()[s.targets[0]] = std::move(value);
          }
          return;
        }
        // `set ns.attr = v` changes the namespace where it lives (it may be outside the loop
        // scope; that is what namespace() is for).
        json* target = Lookup(s.targets[0]);
        if (target == nullptr || !target->is_object()) {
          Invalid("chat template: `" + s.targets[0] + "` is not a namespace" + At(s.pos));
        }
        json value = v.undefined ? json() : std::move(v).Take();
        (*target)[s.targets[1]] = std::move(value);
        return;
      }
      case SK::kFor: {
        Value seq = Eval(*s.expr);
        // The items are copied: the body may change the list through a namespace.
        if (!seq.undefined) ChargeCopy(seq.j());
        std::vector<json> items;
        if (seq.undefined || seq.j().is_null()) {
          // Jinja iterates an undefined as empty; None is an error there, but HF templates test
          // `if x` first anyway, so treat both as empty rather than fail a render.
        } else if (seq.j().is_array()) {
          items.assign(seq.j().begin(), seq.j().end());
        } else if (seq.j().is_object()) {
          for (auto it = seq.j().begin(); it != seq.j().end(); ++it) items.push_back(it.key());
        } else if (seq.j().is_string()) {
          for (auto& c : Utf8Chars(seq.j().get_ref<const std::string&>())) items.push_back(c);
        } else {
          Invalid("chat template: cannot iterate over a " + TypeName(seq) + At(s.expr->pos));
        }
        const int64_t n = static_cast<int64_t>(items.size());
        for (int64_t i = 0; i < n; ++i) {
          if (++loop_iterations_ > limits_.max_loop_iterations) {
            Fail(absl::StatusCode::kResourceExhausted,
                 absl::StrCat("chat template: more than ", limits_.max_loop_iterations,
                              " loop iterations", At(s.pos)));
          }
          scopes_.emplace_back();
          auto& scope = scopes_.back();
          if (s.targets.size() == 1) {
            scope[s.targets[0]] = std::move(items[i]);
          } else {
            const json& item = items[i];
            if (!item.is_array() || item.size() != s.targets.size()) {
              Invalid(absl::StrCat("chat template: cannot unpack a ", TypeName(Value::Ref(item)),
                                   " into ", s.targets.size(), " loop variables", At(s.pos)));
            }
            for (size_t k = 0; k < s.targets.size(); ++k) scope[s.targets[k]] = item[k];
          }
          scope["loop"] = json{{"index0", i},           {"index", i + 1}, {"first", i == 0},
                               {"last", i == n - 1},    {"length", n},    {"revindex", n - i},
                               {"revindex0", n - i - 1}};
          Exec(s.body);
          scopes_.pop_back();
        }
        return;
      }
    }
  }

  json* Lookup(const std::string& name) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return &f->second;
    }
    return nullptr;
  }

  Value Eval(const Expr& e) {
    Step();
    switch (e.kind) {
      case EK::kLiteral:
        return Value::Of(e.literal);
      case EK::kName: {
        const json* v = Lookup(e.name);
        return v ? Value::Ref(*v) : Value::Undef();
      }
      case EK::kList: {
        json a = json::array();
        for (const auto& x : e.args) a.push_back(Defined(Eval(*x), *x));
        return Value::Of(std::move(a));
      }
      case EK::kDict: {
        json o = json::object();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = Eval(*e.args[k]);
          if (key.undefined || !key.j().is_string()) {
            Invalid("chat template: dict keys must be strings" + At(e.args[k]->pos));
          }
          o[key.j().get<std::string>()] = Defined(Eval(*e.args[k + 1]), *e.args[k + 1]);
        }
        return Value::Of(std::move(o));
      }
      case EK::kAttr: {
        Value obj = Eval(*e.args[0]);
        return GetItem(obj, json(e.name), e, /*attr=*/true);
      }
      case EK::kIndex: {
        Value obj = Eval(*e.args[0]);
        Value key = Eval(*e.args[1]);
        if (key.undefined) return Value::Undef();
        return GetItem(obj, key.j(), e, /*attr=*/false);
      }
      case EK::kSlice:
        return Slice(e);
      case EK::kCall:
        return Call(e);
      case EK::kFilter:
        return Filter(e);
      case EK::kTest: {
        const bool r = Test(e);
        return Value::Of(e.negated ? !r : r);
      }
      case EK::kUnary: {
        Value v = Eval(*e.args[0]);
        if (v.undefined || !IsNumber(v.j())) {
          Invalid("chat template: unary " + e.name + " on a " + TypeName(v) + At(e.pos));
        }
        if (e.name == "+") return v;
        if (v.j().is_number_float()) return Value::Of(-v.j().get<double>());
        return Value::Of(-v.j().get<int64_t>());
      }
      case EK::kBinary:
        return Binary(e);
      case EK::kAnd: {
        Value a = Eval(*e.args[0]);
        return Truthy(a) ? Eval(*e.args[1]) : a;
      }
      case EK::kOr: {
        Value a = Eval(*e.args[0]);
        return Truthy(a) ? a : Eval(*e.args[1]);
      }
      case EK::kNot:
        return Value::Of(!Truthy(Eval(*e.args[0])));
      case EK::kCond:
        if (Truthy(Eval(*e.args[1]))) return Eval(*e.args[0]);
        return e.args.size() > 2 ? Eval(*e.args[2]) : Value::Undef();
    }
    Invalid("chat template: bad expression" + At(e.pos));
  }

  // Undefined inside a list or dict literal would have no JSON form; Jinja keeps it, printing
  // it empty. Using null is the nearest we can store (documented).
  json Defined(Value v, const Expr& e) {
    json j = v.undefined ? json() : std::move(v).Take();
    CheckDepth(j, 1, e.pos);
    return j;
  }

  // Values nest only through list/dict literals and namespace(); `{% set x = [x] %}` in a loop
  // could otherwise build a value deep enough that copying, printing or freeing it (all
  // recursive) overflows the stack. The walk is charged like a copy.
  void CheckDepth(const json& j, int depth, Pos p) {
    if (depth > limits_.max_value_depth) {
      Invalid(absl::StrCat("chat template: a value nested deeper than ", limits_.max_value_depth,
                           At(p)));
    }
    if (!j.is_array() && !j.is_object()) return;
    Charge(64 * j.size());
    for (const json& x : j) CheckDepth(x, depth + 1, p);
  }

  Value GetItem(const Value& obj, const json& key, const Expr& e, bool attr) {
    // Python's Jinja raises on an attribute of an undefined value; @huggingface/jinja (the
    // reference) gives undefined again, so Qwen3's `messages[0].role` renders with no messages.
    // Following the reference keeps a malformed request a rendering question, not an error.
    if (obj.undefined) return Value::Undef();
    const json& j = obj.j();
    if (j.is_object()) {
      if (!key.is_string()) return Value::Undef();
      auto it = j.find(key.get<std::string>());
      return it == j.end() ? Value::Undef() : Value::Part(obj, *it);
    }
    if ((j.is_array() || j.is_string()) && key.is_number_integer() && !attr) {
      int64_t i = key.get<int64_t>();
      if (j.is_array()) {
        const int64_t n = static_cast<int64_t>(j.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::Undef();
        return Value::Part(obj, j[static_cast<size_t>(i)]);
      }
      Charge(j.get_ref<const std::string&>().size());
      auto chars = Utf8Chars(j.get_ref<const std::string&>());
      const int64_t n = static_cast<int64_t>(chars.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::Undef();
      return Value::Of(chars[static_cast<size_t>(i)]);
    }
    if (j.is_null()) {
      Invalid("chat template: `" + (key.is_string() ? key.get<std::string>() : key.dump()) +
              "` of none" + At(e.pos));
    }
    return Value::Undef();
  }

  Value Slice(const Expr& e) {
    Value obj = Eval(*e.args[0]);
    std::optional<int64_t> part[3];
    for (int k = 0; k < 3; ++k) {
      if (!e.has_slice[k]) continue;
      Value v = Eval(*e.args[k + 1]);
      if (v.undefined || v.j().is_null()) continue;
      if (!v.j().is_number_integer())
        Invalid("chat template: slice bounds must be integers" + At(e.pos));
      part[k] = v.j().get<int64_t>();
    }
    const int64_t step = part[2].value_or(1);
    if (step == 0) Invalid("chat template: slice step cannot be zero" + At(e.pos));
    std::vector<json> items;
    bool is_string = false;
    if (!obj.undefined && obj.j().is_array()) {
      items.assign(obj.j().begin(), obj.j().end());
    } else if (!obj.undefined && obj.j().is_string()) {
      is_string = true;
      Charge(obj.j().get_ref<const std::string&>().size());
      for (auto& c : Utf8Chars(obj.j().get_ref<const std::string&>()))
        items.push_back(std::move(c));
    } else {
      Invalid("chat template: cannot slice a " + TypeName(obj) + At(e.pos));
    }
    // Python's slice.indices.
    const int64_t n = static_cast<int64_t>(items.size());
    auto clamp = [&](std::optional<int64_t> v, int64_t def) -> int64_t {
      if (!v) return def;
      int64_t x = *v;
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t start = clamp(part[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(part[1], step > 0 ? n : -1);
    json out = is_string ? json("") : json::array();
    std::string s;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      Step();
      if (is_string) {
        s += items[static_cast<size_t>(i)].get_ref<const std::string&>();
      } else {
        out.push_back(items[static_cast<size_t>(i)]);
      }
    }
    return Value::Of(is_string ? json(s) : std::move(out));
  }

  static bool Equal(const Value& a, const Value& b) {
    if (a.undefined || b.undefined) return a.undefined && b.undefined;
    if (IsNumber(a.j()) && IsNumber(b.j())) return a.j().get<double>() == b.j().get<double>();
    return a.j() == b.j();
  }

  Value Binary(const Expr& e) {
    const std::string& op = e.name;
    Value a = Eval(*e.args[0]);
    Value b = Eval(*e.args[1]);
    if (!a.undefined && a.j().is_string()) Charge(a.j().get_ref<const std::string&>().size());
    if (op == "==") return Value::Of(Equal(a, b));
    if (op == "!=") return Value::Of(!Equal(a, b));
    if (op == "~") return Value::Of(CheckString(Str(a) + Str(b), e.pos));
    if (op == "in") {
      bool r = false;
      if (!b.undefined && b.j().is_string()) {
        if (a.undefined || !a.j().is_string()) {
          Invalid("chat template: `in <string>` needs a string on the left" + At(e.pos));
        }
        Charge(b.j().get_ref<const std::string&>().size());
        r = b.j().get_ref<const std::string&>().find(a.j().get_ref<const std::string&>()) !=
            std::string::npos;
      } else if (!b.undefined && b.j().is_array()) {
        for (const json& x : b.j()) {
          Step();
          if (Equal(a, Value::Ref(x))) r = true;
        }
      } else if (!b.undefined && b.j().is_object()) {
        r = !a.undefined && a.j().is_string() && b.j().contains(a.j().get<std::string>());
      } else {
        Invalid("chat template: `in` on a " + TypeName(b) + At(e.pos));
      }
      return Value::Of(e.negated ? !r : r);
    }
    if (a.undefined || b.undefined) {
      Invalid("chat template: `" + op + "` on an undefined value" + At(e.pos));
    }
    const json& x = a.j();
    const json& y = b.j();
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c;
      if (IsNumber(x) && IsNumber(y)) {
        const double p = x.get<double>(), q = y.get<double>();
        c = p < q ? -1 : (p > q ? 1 : 0);
      } else if (x.is_string() && y.is_string()) {
        c = x.get_ref<const std::string&>().compare(y.get_ref<const std::string&>());
      } else {
        Invalid("chat template: cannot compare a " + TypeName(a) + " with a " + TypeName(b) +
                At(e.pos));
      }
      const bool r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
      return Value::Of(r);
    }
    if (op == "+") {
      if (x.is_string() && y.is_string()) {
        return Value::Of(CheckString(x.get<std::string>() + y.get<std::string>(), e.pos));
      }
      if (x.is_array() && y.is_array()) {
        if (x.size() + y.size() > limits_.max_loop_iterations) {
          Fail(absl::StatusCode::kResourceExhausted, "chat template: list too long" + At(e.pos));
        }
        json r = x;
        for (const json& v : y) r.push_back(v);
        return Value::Of(std::move(r));
      }
    }
    if (IsNumber(x) && IsNumber(y)) {
      const bool ints = x.is_number_integer() && y.is_number_integer();
      if (ints && (op == "+" || op == "-" || op == "*" || op == "//" || op == "%")) {
        const int64_t p = x.get<int64_t>(), q = y.get<int64_t>();
        int64_t r = 0;
        bool overflow = false;
        if (op == "+") overflow = __builtin_add_overflow(p, q, &r);
        if (op == "-") overflow = __builtin_sub_overflow(p, q, &r);
        if (op == "*") overflow = __builtin_mul_overflow(p, q, &r);
        if (op == "//" || op == "%") {
          if (q == 0) Invalid("chat template: division by zero" + At(e.pos));
          if (p == INT64_MIN && q == -1) {
            overflow = true;
          } else {
            int64_t d = p / q, m = p % q;
            if (m != 0 && ((m < 0) != (q < 0))) {
              --d;  // Python floors
              m += q;
            }
            r = op == "//" ? d : m;
          }
        }
        if (overflow) Invalid("chat template: integer overflow" + At(e.pos));
        return Value::Of(r);
      }
      const double p = x.get<double>(), q = y.get<double>();
      if ((op == "/" || op == "//" || op == "%") && q == 0) {
        Invalid("chat template: division by zero" + At(e.pos));
      }
      if (op == "+") return Value::Of(p + q);
      if (op == "-") return Value::Of(p - q);
      if (op == "*") return Value::Of(p * q);
      if (op == "/") return Value::Of(p / q);
      if (op == "//") return Value::Of(std::floor(p / q));
      if (op == "%") return Value::Of(p - q * std::floor(p / q));
    }
    if (op == "*" && x.is_string() && y.is_number_integer()) {
      const int64_t k = y.get<int64_t>();
      const size_t total = k <= 0 ? 0 : x.get_ref<const std::string&>().size() * size_t(k);
      if (k > 0 && total / size_t(k) != x.get_ref<const std::string&>().size()) {
        Fail(absl::StatusCode::kResourceExhausted, "chat template: string too long" + At(e.pos));
      }
      if (total > limits_.max_string_bytes)
        CheckString(std::string(limits_.max_string_bytes + 1, ' '), e.pos);
      std::string r;
      for (int64_t i = 0; i < k; ++i) r += x.get_ref<const std::string&>();
      return Value::Of(r);
    }
    Invalid("chat template: `" + op + "` on a " + TypeName(a) + " and a " + TypeName(b) +
            At(e.pos));
  }

  // Evaluated arguments of a call, filter or test: positional ones from e.args[first..].
  struct Args {
    std::vector<Value> pos;
    std::map<std::string, Value> kw;
    const Value* Get(size_t i, const char* name) const {
      if (i < pos.size()) return &pos[i];
      auto it = kw.find(name);
      return it == kw.end() ? nullptr : &it->second;
    }
  };
  Args EvalArgs(const Expr& e, size_t first) {
    Args a;
    for (size_t k = first; k < e.args.size(); ++k) a.pos.push_back(Eval(*e.args[k]));
    for (const auto& [name, x] : e.kwargs) a.kw[name] = Eval(*x);
    return a;
  }
  std::string StringArg(const Args& a, size_t i, const char* name, const Expr& e,
                        std::optional<std::string> def = std::nullopt) {
    const Value* v = a.Get(i, name);
    if (v == nullptr || v->undefined || v->j().is_null()) {
      if (def) return *def;
      Invalid(std::string("chat template: missing argument `") + name + "`" + At(e.pos));
    }
    if (!v->j().is_string()) {
      Invalid(std::string("chat template: argument `") + name + "` must be a string" + At(e.pos));
    }
    return v->j().get<std::string>();
  }

  Value Call(const Expr& e) {
    const Expr& callee = *e.args[0];
    Args a = EvalArgs(e, 1);
    if (callee.kind == EK::kName) {
      const std::string& f = callee.name;
      if (f == "raise_exception") {
        Invalid(StringArg(a, 0, "message", e, std::string("raise_exception called")));
      }
      if (f == "namespace") {
        json o = json::object();
        for (auto& [k, v] : a.kw) {
          o[k] = v.undefined ? json() : v.j();
          CheckDepth(o[k], 1, e.pos);
        }
        if (!a.pos.empty())
          Invalid("chat template: namespace() takes keyword arguments" + At(e.pos));
        return Value::Of(std::move(o));
      }
      if (f == "range") {
        int64_t lo = 0, hi = 0, step = 1;
        std::vector<int64_t> xs;
        for (const Value& v : a.pos) {
          if (v.undefined || !v.j().is_number_integer()) {
            Invalid("chat template: range() takes integers" + At(e.pos));
          }
          xs.push_back(v.j().get<int64_t>());
        }
        if (xs.size() == 1)
          hi = xs[0];
        else if (xs.size() >= 2)
          lo = xs[0], hi = xs[1];
        if (xs.size() == 3) step = xs[2];
        if (xs.empty() || xs.size() > 3 || step == 0) {
          Invalid("chat template: bad range() arguments" + At(e.pos));
        }
        json r = json::array();
        for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
          if (r.size() >= limits_.max_loop_iterations) {
            Fail(absl::StatusCode::kResourceExhausted,
                 "chat template: range() longer than the loop cap" + At(e.pos));
          }
          r.push_back(i);
        }
        return Value::Of(std::move(r));
      }
      if (f == "strftime_now") {
        const std::string fmt = StringArg(a, 0, "format", e);
        const std::time_t t = static_cast<std::time_t>(now_);
        std::tm tm{};
        gmtime_r(&t, &tm);
        char buf[256];
        const size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
        if (n == 0 && !fmt.empty()) Invalid("chat template: bad strftime_now format" + At(e.pos));
        return Value::Of(std::string(buf, n));
      }
      const json* v = Lookup(f);
      Invalid("chat template: `" + f + "` is " + (v ? "not a function" : "not a known function") +
              At(e.pos));
    }
    if (callee.kind != EK::kAttr)
      Invalid("chat template: only methods and functions can be called" + At(e.pos));
    Value obj = Eval(*callee.args[0]);
    const std::string& m = callee.name;
    if (!obj.undefined && obj.j().is_string()) {
      const std::string& s = obj.j().get_ref<const std::string&>();
      Charge(s.size());
      if (m == "startswith" || m == "endswith") {
        const std::string x = StringArg(a, 0, "prefix", e);
        const bool r = m == "startswith" ? s.compare(0, x.size(), x) == 0
                                         : s.size() >= x.size() &&
                                               s.compare(s.size() - x.size(), x.size(), x) == 0;
        return Value::Of(r);
      }
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        const Value* c = a.Get(0, "chars");
        std::optional<std::string> chars;
        if (c && !c->undefined && !c->j().is_null()) chars = StringArg(a, 0, "chars", e);
        return Value::Of(Strip(s, m != "rstrip", m != "lstrip", chars));
      }
      if (m == "upper" || m == "lower") return Value::Of(Case(s, m == "upper"));
      if (m == "split") return Value::Of(Split(s, a, e));
      if (m == "replace") {
        const std::string from = StringArg(a, 0, "old", e), to = StringArg(a, 1, "new", e);
        return Value::Of(CheckString(Replace(s, from, to, e), e.pos));
      }
      Invalid("chat template: unknown string method `" + m + "`" + At(e.pos));
    }
    if (!obj.undefined && obj.j().is_object()) {
      if (m == "items" || m == "keys" || m == "values") {
        json r = json::array();
        for (auto it = obj.j().begin(); it != obj.j().end(); ++it) {
          if (m == "items") r.push_back(json::array({it.key(), it.value()}));
          if (m == "keys") r.push_back(it.key());
          if (m == "values") r.push_back(it.value());
        }
        return Value::Of(std::move(r));
      }
      if (m == "get") {
        const std::string k = StringArg(a, 0, "key", e);
        auto it = obj.j().find(k);
        if (it != obj.j().end()) return Value::Part(obj, *it);
        const Value* d = a.Get(1, "default");
        return d ? *d : Value::Of(nullptr);
      }
    }
    Invalid("chat template: unknown method `" + m + "` on a " + TypeName(obj) + At(e.pos));
  }

  static std::string Case(const std::string& s, bool upper) {
    // ASCII only: Python's str.upper also maps non-ASCII letters; no target template needs it.
    std::string r = s;
    for (char& c : r) {
      if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
      if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
    return r;
  }

  json Split(const std::string& s, const Args& a, const Expr& e) {
    const Value* sep = a.Get(0, "sep");
    json r = json::array();
    if (sep == nullptr || sep->undefined || sep->j().is_null()) {
      // Python's split(): runs of whitespace, no empty pieces.
      size_t i = 0;
      while (i < s.size()) {
        while (i < s.size() && IsPySpace(s[i])) ++i;
        size_t j = i;
        while (j < s.size() && !IsPySpace(s[j])) ++j;
        if (j > i) r.push_back(s.substr(i, j - i));
        i = j;
      }
      return r;
    }
    const std::string d = StringArg(a, 0, "sep", e);
    if (d.empty()) Invalid("chat template: split() with an empty separator" + At(e.pos));
    size_t start = 0;
    while (true) {
      Step();
      const size_t f = s.find(d, start);
      if (f == std::string::npos) break;
      r.push_back(s.substr(start, f - start));
      start = f + d.size();
    }
    r.push_back(s.substr(start));
    return r;
  }

  std::string Replace(const std::string& s, const std::string& from, const std::string& to,
                      const Expr& e) {
    if (from.empty()) Invalid("chat template: replace() with an empty search string" + At(e.pos));
    std::string r;
    size_t start = 0;
    while (true) {
      Step();
      const size_t f = s.find(from, start);
      if (f == std::string::npos) break;
      r.append(s, start, f - start);
      r += to;
      if (r.size() > limits_.max_string_bytes) CheckString(std::move(r), e.pos);
      start = f + from.size();
    }
    r.append(s, start, std::string::npos);
    return r;
  }

  Value Filter(const Expr& e) {
    Value v = Eval(*e.args[0]);
    if (!v.undefined && v.j().is_string()) Charge(v.j().get_ref<const std::string&>().size());
    Args a = EvalArgs(e, 1);
    const std::string& f = e.name;
    if (f == "default" || f == "d") {
      const Value* d = a.Get(0, "default_value");
      const Value* boolean = a.Get(1, "boolean");
      const bool use = v.undefined || (boolean && Truthy(*boolean) && !Truthy(v));
      if (use) return d ? *d : Value::Of("");
      return v;
    }
    if (f == "tojson") {
      int indent = 0;
      if (const Value* i = a.Get(0, "indent"); i && !i->undefined && !i->j().is_null()) {
        if (!i->j().is_number_integer() || i->j().get<int64_t>() < 0 ||
            i->j().get<int64_t>() > 16) {
          Invalid("chat template: tojson indent must be an integer in [0, 16]" + At(e.pos));
        }
        indent = static_cast<int>(i->j().get<int64_t>());
      }
      std::string out;
      ToJson(out, v.undefined ? json() : v.j(), indent, 0);
      return Value::Of(CheckString(std::move(out), e.pos));
    }
    if (f == "string") return Value::Of(Str(v));
    if (f == "length" || f == "count") {
      if (v.undefined) return Value::Of(0);
      if (v.j().is_string()) return Value::Of(Utf8Length(v.j().get_ref<const std::string&>()));
      if (v.j().is_array() || v.j().is_object())
        return Value::Of(static_cast<int64_t>(v.j().size()));
      Invalid("chat template: `length` of a " + TypeName(v) + At(e.pos));
    }
    if (f == "trim" || f == "upper" || f == "lower" || f == "capitalize") {
      if (v.undefined || !v.j().is_string()) {
        // Jinja stringifies first; do the same for None/numbers.
        v = Value::Of(Str(v));
      }
      const std::string& s = v.j().get_ref<const std::string&>();
      if (f == "trim") {
        const Value* c = a.Get(0, "chars");
        std::optional<std::string> chars;
        if (c && !c->undefined && !c->j().is_null()) chars = StringArg(a, 0, "chars", e);
        return Value::Of(Strip(s, true, true, chars));
      }
      if (f == "capitalize") {
        std::string r = Case(s, false);
        if (!r.empty() && r[0] >= 'a' && r[0] <= 'z') r[0] = static_cast<char>(r[0] - 32);
        return Value::Of(r);
      }
      return Value::Of(Case(s, f == "upper"));
    }
    if (f == "join") {
      const std::string sep = StringArg(a, 0, "d", e, std::string());
      if (v.undefined || !v.j().is_array()) {
        Invalid("chat template: `join` of a " + TypeName(v) + At(e.pos));
      }
      std::string r;
      bool first = true;
      for (const json& x : v.j()) {
        Step();
        if (!first) r += sep;
        first = false;
        r += Str(Value::Ref(x));
        if (r.size() > limits_.max_string_bytes) CheckString(std::move(r), e.pos);
      }
      return Value::Of(r);
    }
    if (f == "first" || f == "last") {
      if (v.undefined || !v.j().is_array())
        Invalid("chat template: `" + f + "` of a " + TypeName(v) + At(e.pos));
      if (v.j().empty()) return Value::Undef();
      return Value::Part(v, f == "first" ? v.j().front() : v.j().back());
    }
    if (f == "list") {
      if (!v.undefined && v.j().is_array()) return v;
      if (!v.undefined && v.j().is_string()) {
        json r = json::array();
        for (auto& c : Utf8Chars(v.j().get_ref<const std::string&>())) r.push_back(c);
        return Value::Of(std::move(r));
      }
      Invalid("chat template: `list` of a " + TypeName(v) + At(e.pos));
    }
    if (f == "items") {
      if (v.undefined || !v.j().is_object())
        Invalid("chat template: `items` of a " + TypeName(v) + At(e.pos));
      json r = json::array();
      for (auto it = v.j().begin(); it != v.j().end(); ++it)
        r.push_back(json::array({it.key(), it.value()}));
      return Value::Of(std::move(r));
    }
    Invalid("chat template: unknown filter `" + f + "`" + At(e.pos));
  }

  bool Test(const Expr& e) {
    const std::string& t = e.name;
    Value v = Eval(*e.args[0]);
    Args a = EvalArgs(e, 1);
    const json& j = v.j();
    if (t == "defined") return !v.undefined;
    if (t == "undefined") return v.undefined;
    if (v.undefined) {
      if (t == "none" || t == "string" || t == "mapping" || t == "iterable" || t == "sequence" ||
          t == "number" || t == "integer" || t == "float" || t == "boolean" || t == "true" ||
          t == "false") {
        return false;
      }
    } else {
      if (t == "none") return j.is_null();
      if (t == "string") return j.is_string();
      if (t == "mapping") return j.is_object();
      if (t == "iterable" || t == "sequence") return j.is_array() || j.is_string() || j.is_object();
      if (t == "number") return IsNumber(j);
      if (t == "integer") return j.is_number_integer();
      if (t == "float") return j.is_number_float();
      if (t == "boolean") return j.is_boolean();
      if (t == "true") return j.is_boolean() && j.get<bool>();
      if (t == "false") return j.is_boolean() && !j.get<bool>();
    }
    if (t == "equalto" || t == "eq" || t == "sameas") {
      const Value* o = a.Get(0, "other");
      if (!o) Invalid("chat template: `is " + t + "` needs an argument" + At(e.pos));
      return Equal(v, *o);
    }
    if (t == "even" || t == "odd" || t == "divisibleby") {
      if (v.undefined || !j.is_number_integer()) {
        Invalid("chat template: `is " + t + "` of a " + TypeName(v) + At(e.pos));
      }
      const int64_t x = j.get<int64_t>();
      if (t == "even") return x % 2 == 0;
      if (t == "odd") return x % 2 != 0;
      const Value* d = a.Get(0, "num");
      if (!d || d->undefined || !d->j().is_number_integer() || d->j().get<int64_t>() == 0) {
        Invalid("chat template: `divisibleby` needs a non-zero integer" + At(e.pos));
      }
      return x % d->j().get<int64_t>() == 0;
    }
    Invalid("chat template: unknown test `" + t + "`" + At(e.pos));
  }

  const ChatTemplateLimits& limits_;
  int64_t now_;
  std::vector<std::map<std::string, json>> scopes_;
  std::string out_;
  uint64_t steps_ = 0;
  uint64_t loop_iterations_ = 0;
};

// Rejects a context too deep or too large before anything copies it around.
absl::Status CheckContext(const json& j, const ChatTemplateLimits& limits, int depth,
                          size_t& bytes) {
  if (depth > limits.max_context_depth) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template context nested deeper than ", limits.max_context_depth));
  }
  bytes += 1;
  if (j.is_string()) bytes += j.get_ref<const std::string&>().size();
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      bytes += it.key().size();
      if (auto s = CheckContext(it.value(), limits, depth + 1, bytes); !s.ok()) return s;
    }
  } else if (j.is_array()) {
    for (const json& x : j) {
      if (auto s = CheckContext(x, limits, depth + 1, bytes); !s.ok()) return s;
    }
  }
  if (bytes > limits.max_context_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template context larger than ", limits.max_context_bytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

ChatTemplate::ChatTemplate(std::unique_ptr<Impl> impl, const ChatTemplateLimits& limits)
    : impl_(std::move(impl)), limits_(limits) {}
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(
    std::string_view source, const ChatTemplateLimits& limits) {
  if (source.size() > limits.max_template_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("chat template is ", source.size(),
                                                   " bytes, more than the cap of ",
                                                   limits.max_template_bytes));
  }
  // Jinja (keep_trailing_newline=False, as transformers uses it) drops one trailing newline.
  if (!source.empty() && source.back() == '\n') source.remove_suffix(1);
  try {
    auto impl = std::make_unique<Impl>();
    Parser parser(Lexer(source).Run(), limits.max_nesting);
    impl->body = parser.ParseAll();
    return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(impl), limits));
  } catch (const TemplateError& e) {
    return absl::Status(e.status.code(), absl::StrCat("chat template: ", e.status.message()));
  }
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  if (!context.is_object()) {
    return absl::InvalidArgumentError("chat template context must be a JSON object");
  }
  size_t bytes = 0;
  if (auto s = CheckContext(context, limits_, 0, bytes); !s.ok()) return s;
  const int64_t now = fixed_time_ != 0 ? fixed_time_ : static_cast<int64_t>(std::time(nullptr));
  try {
    Renderer r(limits_, now);
    return r.Run(impl_->body, context);
  } catch (const TemplateError& e) {
    return e.status;
  } catch (const nlohmann::json::exception& e) {
    // A type the checks above missed; never let it escape as a crash.
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", e.what()));
  }
}

absl::StatusOr<std::string> ChatTemplate::RenderChat(const nlohmann::json& messages,
                                                     bool add_generation_prompt,
                                                     std::string_view bos_token,
                                                     std::string_view eos_token,
                                                     const nlohmann::json& extra) const {
  json context = json::object();
  if (extra.is_object()) {
    context = extra;
  } else if (!extra.is_null()) {
    return absl::InvalidArgumentError("chat template extra context must be an object or null");
  }
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = std::string(bos_token);
  context["eos_token"] = std::string(eos_token);
  return Render(context);
}

}  // namespace switchyard::llm
