// tokengate entry point (placeholder until the relay lands).
int main() { return 0; }
