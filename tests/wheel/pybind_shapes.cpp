// A pybind11 module for the wheel test (tests/wheel/minbase.sh): C++ exceptions translated
// to Python ones (pybind11's and a registered one), a Python exception carried through C++
// frames and back, a Python subclass overriding a virtual, STL conversions, thread_local.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

struct Shape {
  virtual ~Shape() = default;
  virtual double area() const = 0;
  virtual std::string name() const { return "shape"; }
};

struct Square : Shape {
  explicit Square(double side) : side(side) {
    if (side < 0) throw std::invalid_argument("negative side");
  }
  double area() const override { return side * side; }
  std::string name() const override { return "square"; }
  double side;
};

// Lets Python subclasses override Shape's virtuals.
struct PyShape : Shape {
  double area() const override { PYBIND11_OVERRIDE_PURE(double, Shape, area); }
  std::string name() const override { PYBIND11_OVERRIDE(std::string, Shape, name); }
};

struct TooBig : std::runtime_error {
  using std::runtime_error::runtime_error;
};

static thread_local int calls = 0;

PYBIND11_MODULE(pybind_shapes, m) {
  py::class_<Shape, PyShape, std::shared_ptr<Shape>>(m, "Shape")
      .def(py::init<>())
      .def("area", &Shape::area)
      .def("name", &Shape::name);
  py::class_<Square, Shape, std::shared_ptr<Square>>(m, "Square").def(py::init<double>());
  py::register_exception<TooBig>(m, "TooBig");

  // Virtual calls from C++, into Python where a subclass overrides them.
  m.def("describe", [](const std::vector<std::shared_ptr<Shape>> &shapes) {
    std::vector<std::string> out;
    for (const auto &s : shapes) out.push_back(s->name() + "=" + std::to_string(static_cast<int>(s->area())));
    std::sort(out.begin(), out.end());
    return out;
  });
  m.def("check", [](double area) {
    if (area > 100) throw TooBig("area " + std::to_string(static_cast<int>(area)) + " > 100");
    if (area < 0) throw std::out_of_range("negative area");
    return area;
  });
  // A Python exception raised in the callback crosses these C++ frames as
  // py::error_already_set and comes back out as itself.
  m.def("call_twice", [](const std::function<int(int)> &f, int x) { return f(f(x)); });
  m.def("count", [] { return ++calls; });
}
