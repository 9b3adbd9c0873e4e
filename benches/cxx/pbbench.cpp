// The pybind11 module benches/bench_cxx.py measures, built both as a native .so (clang++-22
// -O2) and as bitcode JIT-compiled by jitload: a numeric loop, STL work on converted
// arguments, a bound class, and many tiny calls (pybind11's dispatch cost).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace py = pybind11;

static uint64_t collatz_steps(uint64_t limit) {
  uint64_t total = 0;
  for (uint64_t i = 1; i < limit; i++) {
    uint64_t x = i;
    while (x != 1) {
      x = (x & 1) ? 3 * x + 1 : x / 2;
      total++;
    }
  }
  return total;
}

static std::map<std::string, int> word_counts(const std::vector<std::string> &words) {
  std::map<std::string, int> counts;
  for (const auto &w : words) {
    std::string lower(w);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    counts[lower]++;
  }
  return counts;
}

struct Point {
  double x, y;
  Point(double x, double y) : x(x), y(y) {}
  Point add(const Point &o) const { return Point(x + o.x, y + o.y); }
  double norm2() const { return x * x + y * y; }
};

PYBIND11_MODULE(pbbench, m) {
  m.def("collatz_steps", &collatz_steps);
  m.def("word_counts", &word_counts);
  m.def("add", [](int a, int b) { return a + b; });
  py::class_<Point>(m, "Point")
      .def(py::init<double, double>())
      .def("add", &Point::add)
      .def("norm2", &Point::norm2)
      .def_readonly("x", &Point::x);
}
