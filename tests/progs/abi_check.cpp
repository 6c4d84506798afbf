// ABI gate: the vendor-style headers, npushim.h and the shim's own view of every hooked
// function (generated from the shim's hook table into npushim_exports.h, with the functions
// renamed shim_*, and the list NPUSHIM_EACH_HOOK) compile together, and for every hook each
// parameter and the return value agree in size, alignment and class (integer, pointer,
// reference-as-pointer).
#include "acl/acl.h"
#include "hccl/dispatcher.h"
#include "npushim.h"
#include "npushim_exports.h"

#include <cstdio>
#include <type_traits>

namespace {

template <class T>
constexpr int abi_class()
{
    using U = std::remove_cv_t<std::remove_reference_t<T>>;
    if constexpr (std::is_reference_v<T> || std::is_pointer_v<U>)
        return 2;  // passed as an address
    else if constexpr (std::is_integral_v<U> || std::is_enum_v<U>)
        return 1;  // passed as an integer
    else
        return 0;
}

template <class A, class B>
constexpr bool same_abi()
{
    using UA = std::conditional_t<std::is_reference_v<A>, void *, std::remove_cv_t<A>>;
    using UB = std::conditional_t<std::is_reference_v<B>, void *, std::remove_cv_t<B>>;
    return abi_class<A>() != 0 && abi_class<A>() == abi_class<B>() && sizeof(UA) == sizeof(UB) &&
           alignof(UA) == alignof(UB);
}

template <class F, class G>
struct Compare;

template <class RA, class... A, class RB, class... B>
struct Compare<RA (*)(A...), RB (*)(B...)> {
    static_assert(sizeof...(A) == sizeof...(B), "parameter count differs");
    static constexpr bool value = same_abi<RA, RB>() && (same_abi<A, B>() && ...);
};

#define NPUSHIM_CHECK_HOOK(name)                                                              \
    static_assert(Compare<decltype(&::name), decltype(&::shim_##name)>::value,             \
                  #name ": the shim's signature differs from the vendor's");
NPUSHIM_EACH_HOOK(NPUSHIM_CHECK_HOOK)
static_assert(sizeof(aclError) == sizeof(int) && sizeof(HcclResult) == sizeof(int), "result widths");

}  // namespace

int main()
{
    const char *(*version)(void) = npushim_version;
    std::printf("abi ok %s\n", version != nullptr ? "npushim.h" : "");
    return 0;
}
