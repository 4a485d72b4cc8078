// tokengate's main(): everything is in run_cli().
#include "proxy/cli.hpp"

int main(int argc, char** argv) { return tokengate::run_cli(argc, argv); }
