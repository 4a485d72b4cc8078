// Temporary directories and the common fixture for tokenstore tests.
#include "tests/unit/tokenstore/test_helpers.hpp"

#include <cstdlib>
#include <stdexcept>

namespace tokengate::tokenstore::test {

temp_dir::temp_dir()
{
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tokenstore-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

temp_dir::~temp_dir()
{
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

fixture::fixture(bool durable, service_config cfg)
    : keys(dir.path()), st(dir.path(), store::options{std::size_t{1} << 20, durable}), svc(st, keys, cfg)
{
}

}  // namespace tokengate::tokenstore::test
