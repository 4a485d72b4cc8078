#!/usr/bin/python3
"""Totals the JUnit XML files of every test runner (Catch2 unit tests, pytest)
into the one closing line ./dev test prints, listing each failure above it."""
import pathlib
import sys
import xml.etree.ElementTree as ET


def main(results_dir: str) -> int:
    results = pathlib.Path(results_dir)
    passed = failed = skipped = 0
    failures = []
    for xml_file in sorted(results.glob("*.xml")):
        try:
            root = ET.parse(xml_file).getroot()
        except ET.ParseError as e:
            failures.append(f"{xml_file.name}: unreadable results ({e})")
            failed += 1
            continue
        for case in root.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            if bad is not None:
                failed += 1
                text = (bad.get("message") or "") + "\n" + (bad.text or "")
                failures.append(f"{xml_file.stem}: {name}\n    " + text.strip().replace("\n", "\n    ")[:2000])
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
    # A runner that died before writing its results counts as a failure.
    for crash in sorted(results.glob("*.crash")):
        failed += 1
        failures.append(crash.read_text().strip())
    if failures:
        print("\nFailures:")
        for f in failures:
            print(" - " + f)
    line = f"tests: {passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
