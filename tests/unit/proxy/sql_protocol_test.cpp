// The SQL-over-HTTP protocol of @neondatabase/serverless: connection strings,
// request bodies and headers, and the exact JSON of answers and errors.
#include <catch2/catch.hpp>

#include "proxy/http/sql_protocol.hpp"

using namespace tokengate;
using namespace tokengate::http;

namespace {

HttpRequest request(std::string body, std::vector<Header> headers = {}) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/sql";
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

SqlRequest parsed(std::string body, std::vector<Header> headers = {}) {
  auto r = parse_sql_request(request(std::move(body), std::move(headers)));
  if (auto* e = std::get_if<SqlRequestError>(&r)) FAIL("refused: " << e->sqlstate << " " << e->message);
  return std::get<SqlRequest>(std::move(r));
}

SqlRequestError refused(std::string body, std::vector<Header> headers = {}) {
  auto r = parse_sql_request(request(std::move(body), std::move(headers)));
  if (!std::holds_alternative<SqlRequestError>(r)) FAIL("accepted: " << body);
  return std::get<SqlRequestError>(std::move(r));
}

std::string typed(std::string_view text, std::uint32_t oid) {
  std::string out;
  append_typed_value(out, text, oid);
  return out;
}

std::string json_string(std::string_view text) {
  std::string out;
  append_json_string(out, text);
  return out;
}

}  // namespace

TEST_CASE("connection strings: user, password, database and the startup settings passed on", "[sql_protocol]") {
  std::string error;
  auto cs = parse_connection_string(
      "postgresql://analyst:s%40cr%2Ft@db.example.com:5432/my%20db?sslmode=require&options=-c%20search_path%3Dx"
      "&application_name=app",
      error);
  REQUIRE(cs);
  CHECK(cs->user == "analyst");
  CHECK(cs->password == std::optional<std::string>("s@cr/t"));
  CHECK(cs->database == "my db");
  CHECK(cs->parameters == std::vector<std::pair<std::string, std::string>>{{"options", "-c search_path=x"},
                                                                           {"application_name", "app"}});

  SECTION("postgres:// too, no password, no database") {
    auto c = parse_connection_string("postgres://alice@localhost", error);
    REQUIRE(c);
    CHECK(c->user == "alice");
    CHECK_FALSE(c->password);
    CHECK(c->database.empty());
    CHECK(c->parameters.empty());
  }
  SECTION("an empty password is no password") {
    auto c = parse_connection_string("postgresql://alice:@h/db", error);
    REQUIRE(c);
    CHECK_FALSE(c->password);
  }
  SECTION("the last @ ends the user information; IPv6 hosts") {
    auto c = parse_connection_string("postgresql://bob:p@ss@[::1]:8432/db", error);
    REQUIRE(c);
    CHECK(c->user == "bob");
    CHECK(c->password == std::optional<std::string>("p@ss"));
    CHECK(c->database == "db");
  }
  SECTION("user, password and dbname as parameters, as libpq allows") {
    auto c = parse_connection_string("postgresql://h/?user=carol&password=x&dbname=d", error);
    REQUIRE(c);
    CHECK(c->user == "carol");
    CHECK(c->password == std::optional<std::string>("x"));
    CHECK(c->database == "d");
  }
  SECTION("refused") {
    CHECK_FALSE(parse_connection_string("mysql://a@b/c", error));
    CHECK(error == "the connection string must start with postgresql:// or postgres://");
    CHECK_FALSE(parse_connection_string("postgresql://a%00b@h/d", error));
    CHECK(error == "the connection string's user contains a NUL byte");
    CHECK_FALSE(parse_connection_string("postgresql://a@h/d%zz", error));
    CHECK(error == "malformed percent-encoding in the connection string's database");
  }
}

TEST_CASE("request bodies: one statement with parameters of each JSON type", "[sql_protocol]") {
  auto r = parsed(R"({"query":"select $1, $2, $3, $4, $5, $6, $7, $8","params":[null,"it's",42,1.25,true,)"
                  R"({"a":[1,2]},[1,"x y",null,"q\"b\\",[2]],[{"k":"v"}]],"arrayMode":true})");
  REQUIRE(r.queries.size() == 1);
  CHECK_FALSE(r.batch);
  const auto& q = r.queries[0];
  CHECK(q.text == "select $1, $2, $3, $4, $5, $6, $7, $8");
  using P = std::optional<std::string>;
  CHECK(q.params == std::vector<P>{std::nullopt, P("it's"), P("42"), P("1.25"), P("true"), P(R"({"a":[1,2]})"),
                                   P(R"({1,"x y",NULL,"q\"b\\",{2}})"), P(R"({"{\"k\":\"v\"}"})")});
  CHECK(q.array_mode == std::optional<bool>(true));
  CHECK_FALSE(r.connection);
  CHECK_FALSE(r.raw_text_output);
  CHECK_FALSE(r.array_mode);
}

TEST_CASE("request bodies: a batch, and the headers the driver sends", "[sql_protocol]") {
  auto r = parsed(R"({"queries":[{"query":"select 1"},{"query":"select $1","params":["a"],"arrayMode":false}]})",
                  {{"Neon-Connection-String", "postgresql://u:pw@h/d"},
                   {"neon-raw-text-output", "true"},
                   {"Neon-Array-Mode", "true"},
                   {"Neon-Batch-Isolation-Level", "Serializable"},
                   {"Neon-Batch-Read-Only", "true"},
                   {"Neon-Batch-Deferrable", "TRUE"}});
  CHECK(r.batch);
  REQUIRE(r.queries.size() == 2);
  CHECK(r.queries[0].params.empty());
  CHECK_FALSE(r.queries[0].array_mode);
  CHECK(r.queries[1].array_mode == std::optional<bool>(false));
  REQUIRE(r.connection);
  CHECK(r.connection->user == "u");
  CHECK(r.raw_text_output);
  CHECK(r.array_mode);
  CHECK(r.isolation == IsolationLevel::serializable);
  CHECK(r.read_only);
  CHECK_FALSE(r.deferrable);  // only exactly "true" counts
  CHECK(begin_statement(r) == "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY");
}

TEST_CASE("BEGIN for each combination of batch options", "[sql_protocol]") {
  SqlRequest r;
  CHECK(begin_statement(r) == "BEGIN");
  r.read_only = true;
  CHECK(begin_statement(r) == "BEGIN READ ONLY");
  r.deferrable = true;
  CHECK(begin_statement(r) == "BEGIN READ ONLY, DEFERRABLE");
  r.isolation = IsolationLevel::repeatable_read;
  CHECK(begin_statement(r) == "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE");
  r.read_only = r.deferrable = false;
  r.isolation = IsolationLevel::read_uncommitted;
  CHECK(begin_statement(r) == "BEGIN ISOLATION LEVEL READ UNCOMMITTED");
}

TEST_CASE("request bodies that are refused, with the reason", "[sql_protocol]") {
  CHECK(refused("").message == "the request body must be a JSON object with \"query\"");
  CHECK(refused("[1]").message == "the request body must be a JSON object with \"query\"");
  CHECK(refused("{\"query\": ").message.rfind("the request body is not valid JSON", 0) == 0);
  CHECK(refused(R"({"sql":"select 1"})").message ==
        "the request body must hold \"query\" (one statement) or \"queries\" (a transaction)");
  CHECK(refused(R"({"query":1})").message == "the request: \"query\" must be a string");
  CHECK(refused(R"({"query":"x","params":{}})").message == "the request: \"params\" must be an array");
  CHECK(refused(R"({"queries":[{"query":"x"},2]})").message == "queries[1] must be an object with \"query\"");
  auto nul = refused(R"({"query":"select 1\u0000"})");
  CHECK(nul.sqlstate == "22021");
  CHECK(nul.message == "invalid byte sequence for encoding \"UTF8\": 0x00");
  auto level = refused(R"({"queries":[]})", {{"Neon-Batch-Isolation-Level", "Chaos"}});
  CHECK(level.status == 400);
  CHECK(level.message.rfind("invalid isolation level", 0) == 0);
  auto cs = refused(R"({"query":"x"})", {{"Neon-Connection-String", "http://x"}});
  CHECK(cs.message == "the connection string must start with postgresql:// or postgres://");

  std::string many = R"({"query":"x","params":[)";
  for (int i = 0; i < 65536; ++i) many += i ? ",1" : "1";
  many += "]}";
  auto too_many = refused(many);
  CHECK(too_many.sqlstate == "54023");

  std::string deep = R"({"query":"x","params":[)" + std::string(100, '[') + std::string(100, ']') + "]}";
  CHECK(refused(deep).message.rfind("the request body is not valid JSON", 0) == 0);
}

TEST_CASE("command tags as the driver reports them", "[sql_protocol]") {
  auto check = [](std::string_view tag, std::string_view command, std::optional<std::int64_t> count) {
    auto t = parse_command_tag(tag);
    CHECK(t.command == command);
    CHECK(t.row_count == count);
  };
  check("SELECT 3", "SELECT", 3);
  check("INSERT 0 5", "INSERT", 5);
  check("UPDATE 0", "UPDATE", 0);
  check("CREATE TABLE", "CREATE", std::nullopt);
  check("BEGIN", "BEGIN", std::nullopt);
  check("DROP API TOKENS 3", "DROP", std::nullopt);
  check("", "", std::nullopt);
}

TEST_CASE("JSON strings: escapes, and bytes that are not UTF-8", "[sql_protocol]") {
  CHECK(json_string("a\"b\\c\n\t\x01") == R"("a\"b\\c\n\t\u0001")");
  CHECK(json_string("ünïcode €𝄞") == "\"ünïcode €𝄞\"");
  CHECK(json_string("bad \xff here") == "\"bad \xEF\xBF\xBD here\"");
  CHECK(json_string("\xC0\xAF") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");      // overlong '/'
  CHECK(json_string("\xED\xA0\x80") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");  // a surrogate
  CHECK(json_string("cut \xE2\x82") == "\"cut \xEF\xBF\xBD\xEF\xBF\xBD\"");
}

TEST_CASE("typed values: what the driver's typed mode makes of PostgreSQL's text", "[sql_protocol]") {
  CHECK(typed("t", 16) == "true");
  CHECK(typed("f", 16) == "false");
  CHECK(typed("-42", 23) == "-42");
  CHECK(typed("7", 21) == "7");
  CHECK(typed("9007199254740993", 20) == "\"9007199254740993\"");  // int8 stays text: no precision lost
  CHECK(typed("1.5", 701) == "1.5");
  CHECK(typed("1e+30", 700) == "1e+30");
  CHECK(typed("NaN", 701) == "\"NaN\"");
  CHECK(typed("-Infinity", 701) == "\"-Infinity\"");
  CHECK(typed("1.25", 1700) == "\"1.25\"");  // numeric stays text
  CHECK(typed(R"({"a": [1, "x"]})", 3802) == R"({"a": [1, "x"]})");
  CHECK(typed("{not json", 114) == R"("{not json")");
  CHECK(typed("{1,2,NULL}", 1007) == "[1,2,null]");
  CHECK(typed("{}", 1007) == "[]");
  CHECK(typed("{{1,2},{3,4}}", 1007) == "[[1,2],[3,4]]");
  CHECK(typed("[0:1]={5,6}", 1007) == "[5,6]");
  CHECK(typed(R"({a,"b c","q\"x\\",NULL,"NULL"})", 1009) == R"(["a","b c","q\"x\\",null,"NULL"])");
  CHECK(typed("{t,f}", 1000) == "[true,false]");
  CHECK(typed(R"({"{\"k\": 1}"})", 3807) == R"([{"k": 1}])");
  CHECK(typed("{(1,1),(0,0);(2,2),(1,1)}", 1020) == R"x(["(1,1),(0,0)","(2,2),(1,1)"])x");
  CHECK(typed("{1,2", 1007) == R"("{1,2")");         // malformed: the text as it is
  CHECK(typed("{1,2}x", 1007) == R"("{1,2}x")");
  CHECK(typed("{{{{{{{1}}}}}}}", 1007) == R"("{{{{{{{1}}}}}}}")");  // deeper than PostgreSQL allows
  CHECK(typed("1 2", 22) == R"("1 2")");             // int2vector is not a brace array
  CHECK(typed("2026-01-02 03:04:05+00", 1184) == R"("2026-01-02 03:04:05+00")");
}

TEST_CASE("the answer to one statement, rows as arrays or objects", "[sql_protocol]") {
  std::string out;
  ResultWriter w(out, 1 << 20);
  std::vector<FieldDescription> fields{{"id", 16384, 1, 23, 4, -1}, {"name", 16384, 2, 1043, -1, 36}};
  std::vector<std::optional<std::string_view>> r1{"1", "ann"}, r2{"2", std::nullopt};

  SECTION("typed, as arrays") {
    w.begin_result(true, false);
    w.fields(fields);
    CHECK(w.row(r1));
    CHECK(w.row(r2));
    w.end_result("SELECT 2");
    CHECK(out ==
          R"({"rowAsArray":true,"fields":[{"name":"id","dataTypeID":23,"tableID":16384,"columnID":1,"dataTypeSize":4,)"
          R"("dataTypeModifier":-1,"format":"text"},{"name":"name","dataTypeID":1043,"tableID":16384,"columnID":2,)"
          R"("dataTypeSize":-1,"dataTypeModifier":36,"format":"text"}],"rows":[[1,"ann"],[2,null]],)"
          R"("command":"SELECT","rowCount":2})");
  }
  SECTION("raw text, as objects") {
    w.begin_result(false, true);
    w.fields(fields);
    CHECK(w.row(r1));
    w.end_result("INSERT 0 1");
    CHECK(out.substr(out.find("\"rows\"")) == R"("rows":[{"id":"1","name":"ann"}],"command":"INSERT","rowCount":1})");
    CHECK(out.rfind(R"({"rowAsArray":false,)", 0) == 0);
  }
  SECTION("no columns (NoData), an empty statement") {
    w.begin_result(true, true);
    w.fields({});
    w.end_result("");
    CHECK(out == R"({"rowAsArray":true,"fields":[],"rows":[],"command":"","rowCount":null})");
  }
}

TEST_CASE("the answer to a batch", "[sql_protocol]") {
  std::string out;
  ResultWriter w(out, 1 << 20);
  std::vector<std::optional<std::string_view>> one{"1"};
  w.begin_batch();
  w.begin_result(true, true);
  w.fields(std::vector<FieldDescription>{{"a", 0, 0, 23, 4, -1}});
  CHECK(w.row(one));
  w.end_result("SELECT 1");
  w.begin_result(false, true);
  w.fields({});
  w.end_result("CREATE TABLE");
  w.end_batch();
  CHECK(out == R"({"results":[{"rowAsArray":true,"fields":[{"name":"a","dataTypeID":23,"tableID":0,"columnID":0,)"
               R"("dataTypeSize":4,"dataTypeModifier":-1,"format":"text"}],"rows":[["1"]],"command":"SELECT",)"
               R"("rowCount":1},{"rowAsArray":false,"fields":[],"rows":[],"command":"CREATE","rowCount":null}]})");
}

TEST_CASE("a row that takes the answer past its limit is refused", "[sql_protocol]") {
  std::string out;
  ResultWriter w(out, 200);
  w.begin_result(true, true);
  w.fields(std::vector<FieldDescription>{{"v", 0, 0, 25, -1, -1}});
  std::string big(40, 'x');
  std::vector<std::optional<std::string_view>> row{std::string_view(big)};
  CHECK(w.row(row));
  CHECK_FALSE(w.row(row));
  CHECK(w.max_bytes() == 200);
}

TEST_CASE("errors carry every field of the ErrorResponse under the driver's names", "[sql_protocol]") {
  protocol::ErrorFields f;
  f.fields = {{'S', "ERROR"}, {'V', "ERROR"}, {'C', "23505"}, {'M', "duplicate key value"},
              {'D', "Key (id)=(1) already exists."}, {'s', "public"}, {'t', "t"}, {'n', "t_pkey"},
              {'F', "nbtinsert.c"}, {'L', "664"}, {'R', "_bt_check_unique"}, {'P', "8"}, {'H', "a \"hint\""},
              {'W', "SQL function"}, {'c', "id"}, {'d', "int4"}, {'p', "3"}, {'q', "select 1"}};
  CHECK(error_json(f) ==
        R"({"message":"duplicate key value","code":"23505","detail":"Key (id)=(1) already exists.",)"
        R"("hint":"a \"hint\"","position":"8","internalPosition":"3","internalQuery":"select 1","severity":"ERROR",)"
        R"("where":"SQL function","table":"t","column":"id","schema":"public","dataType":"int4",)"
        R"("constraint":"t_pkey","file":"nbtinsert.c","line":"664","routine":"_bt_check_unique"})");
  CHECK(error_json("28P01", "password authentication failed for user \"x\"") ==
        R"({"message":"password authentication failed for user \"x\"","code":"28P01","severity":"ERROR"})");
  auto e = protocol::ErrorResponse::make("ERROR", "42601", "syntax error at or near \"API\"");
  e.position = 8;
  CHECK(error_json(e) ==
        R"({"message":"syntax error at or near \"API\"","code":"42601","position":"8","severity":"ERROR"})");
}

TEST_CASE("JSON parameters as text", "[sql_protocol]") {
  std::string error;
  CHECK(json_parameter_text("0.1", error) == std::optional<std::string>("0.1"));
  CHECK(json_parameter_text("-3", error) == std::optional<std::string>("-3"));
  CHECK(json_parameter_text("18446744073709551615", error) == std::optional<std::string>("18446744073709551615"));
  CHECK(json_parameter_text("1e21", error) == std::optional<std::string>("1e+21"));
  CHECK(json_parameter_text("false", error) == std::optional<std::string>("false"));
  CHECK(json_parameter_text("null", error) == std::nullopt);
  CHECK(json_parameter_text(R"([[1,2],[3,null]])", error) == std::optional<std::string>("{{1,2},{3,NULL}}"));
  CHECK(json_parameter_text(R"(["{}",""])", error) == std::optional<std::string>(R"({"{}",""})"));
}
