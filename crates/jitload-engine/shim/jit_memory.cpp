// The memory ORC's JITLink links the engine's code into: an orc::MemoryMapper whose pages
// come from jitload-codemem (the callbacks in src/llvm/jit_memory.rs), so that W^X and
// JITLOAD_CODE_MEMORY=dualmap hold for cold-compiled code too, as for everything else
// jitload runs. It does what LLVM's InProcessMemoryMapper does, except that a range once
// sealed executable is never made writable again: it is replaced by fresh pages.
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/EHFrameRegistrationPlugin.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/MapperJITLinkMemoryManager.h>
#include <llvm/ExecutionEngine/Orc/MemoryMapper.h>
#include <llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h>
#include <llvm/ExecutionEngine/Orc/Shared/AllocationActions.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

extern "C" {
// src/llvm/jit_memory.rs. Ranges are page-aligned; errors are errno values (0: success).
size_t jitload_jit_memory_page_size(void);
void *jitload_jit_memory_map(size_t len, int *error);
int jitload_jit_memory_protect(void *addr, size_t len, unsigned prot);
int jitload_jit_memory_reset(void *addr, size_t len);
void jitload_jit_memory_unmap(void *addr, size_t len);
}

using namespace llvm;
using namespace llvm::orc;

namespace {

// What jitload_jit_memory_protect takes.
constexpr unsigned PROT_R = 1, PROT_W = 2, PROT_X = 4;

Error os_error(int error, const Twine &what) {
  return make_error<StringError>(what + ": " + std::strerror(error), std::error_code(error, std::generic_category()));
}

class CodememMapper final : public MemoryMapper {
public:
  static Expected<std::unique_ptr<CodememMapper>> Create() { return std::make_unique<CodememMapper>(); }

  unsigned int getPageSize() override { return static_cast<unsigned>(jitload_jit_memory_page_size()); }

  void reserve(size_t bytes, OnReservedFunction on_reserved) override {
    int error = 0;
    void *base = jitload_jit_memory_map(bytes, &error);
    if (base == nullptr)
      return on_reserved(os_error(error, "cannot map " + Twine(bytes) + " bytes for JIT'd code"));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reservations_[ExecutorAddr::fromPtr(base)] = bytes;
    }
    on_reserved(ExecutorAddrRange(ExecutorAddr::fromPtr(base), ExecutorAddrDiff(bytes)));
  }

  // In process: the working memory is the final memory.
  char *prepare(jitlink::LinkGraph &, ExecutorAddr addr, size_t) override { return addr.toPtr<char *>(); }

  void initialize(AllocInfo &info, OnInitializedFunction on_initialized) override {
    ExecutorAddr low(~0ULL), high(0);
    for (auto &segment : info.Segments) {
      ExecutorAddr base = info.MappingBase + segment.Offset;
      size_t size = segment.ContentSize + segment.ZeroFillSize;
      low = std::min(low, base);
      high = std::max(high, base + size);
      std::memset((base + segment.ContentSize).toPtr<char *>(), 0, segment.ZeroFillSize);
      MemProt prot = segment.AG.getMemProt();
      unsigned flags = ((prot & MemProt::Read) == MemProt::Read ? PROT_R : 0) | ((prot & MemProt::Write) == MemProt::Write ? PROT_W : 0) |
                       ((prot & MemProt::Exec) == MemProt::Exec ? PROT_X : 0);
      if (int error = jitload_jit_memory_protect(base.toPtr<void *>(), size, flags))
        return on_initialized(os_error(error, "cannot protect JIT'd code"));
    }
    // The finalize actions (e.g. registering .eh_frame) run on the sealed memory.
    auto dealloc = shared::runFinalizeActions(info.Actions);
    if (!dealloc)
      return on_initialized(dealloc.takeError());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      allocations_[low] = Allocation{size_t(high - low), std::move(*dealloc)};
    }
    on_initialized(low);
  }

  void deinitialize(ArrayRef<ExecutorAddr> allocations, OnDeinitializedFunction on_done) override {
    Error result = Error::success();
    for (ExecutorAddr key : allocations) {
      Allocation allocation;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        auto found = allocations_.find(key);
        if (found == allocations_.end())
          continue;
        allocation = std::move(found->second);
        allocations_.erase(found);
      }
      result = joinErrors(std::move(result), finish(key, allocation));
    }
    on_done(std::move(result));
  }

  void release(ArrayRef<ExecutorAddr> reservations, OnReleasedFunction on_released) override {
    Error result = Error::success();
    for (ExecutorAddr base : reservations) {
      size_t size;
      std::vector<std::pair<ExecutorAddr, Allocation>> inside;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        auto found = reservations_.find(base);
        if (found == reservations_.end())
          continue;
        size = found->second;
        reservations_.erase(found);
        for (auto it = allocations_.lower_bound(base); it != allocations_.end() && it->first < base + size;) {
          inside.emplace_back(it->first, std::move(it->second));
          it = allocations_.erase(it);
        }
      }
      for (auto &[key, allocation] : inside)
        result = joinErrors(std::move(result), shared::runDeallocActions(allocation.dealloc));
      jitload_jit_memory_unmap(base.toPtr<void *>(), size);
    }
    on_released(std::move(result));
  }

  ~CodememMapper() override {
    std::vector<ExecutorAddr> bases;
    for (auto &[base, size] : reservations_)
      bases.push_back(base);
    release(bases, [](Error error) { consumeError(std::move(error)); });
  }

private:
  struct Allocation {
    size_t size = 0;
    std::vector<shared::WrapperFunctionCall> dealloc;
  };

  // Runs an allocation's dealloc actions (e.g. deregistering .eh_frame), then gives its
  // pages back as fresh read+write memory for the manager's next allocation.
  Error finish(ExecutorAddr key, Allocation &allocation) {
    Error error = shared::runDeallocActions(allocation.dealloc);
    if (int os = jitload_jit_memory_reset(key.toPtr<void *>(), allocation.size))
      error = joinErrors(std::move(error), os_error(os, "cannot reset freed JIT memory"));
    return error;
  }

  std::mutex mutex_;
  std::map<ExecutorAddr, size_t> reservations_;
  std::map<ExecutorAddr, Allocation> allocations_;
};

} // namespace

// Makes the LLJIT `builder` creates link through jitload-codemem: an ObjectLinkingLayer with a
// MapperJITLinkMemoryManager over CodememMapper (address space reserved `granularity` bytes at
// a time), and the .eh_frame registration plugin LLJIT's own creator would add.
extern "C" void jitload_lljit_builder_use_codemem(LLVMOrcLLJITBuilderRef builder, size_t granularity) {
  auto *b = reinterpret_cast<LLJITBuilder *>(builder);
  b->setObjectLinkingLayerCreator([granularity](ExecutionSession &es) -> Expected<std::unique_ptr<ObjectLayer>> {
    auto manager = MapperJITLinkMemoryManager::CreateWithMapper<CodememMapper>(granularity);
    if (!manager)
      return manager.takeError();
    auto layer = std::make_unique<ObjectLinkingLayer>(es, std::move(*manager));
    auto eh_frames = EHFrameRegistrationPlugin::Create(es);
    if (!eh_frames)
      return eh_frames.takeError();
    layer->addPlugin(std::move(*eh_frames));
    return std::move(layer);
  });
}
