/*
 * Test tooling for running the agent's Windows build under Wine; never
 * shipped.
 *
 * Rust's standard library (since 1.78) draws its random numbers from
 * ProcessPrng in bcryptprimitives.dll. Debian's Wine 8.0 does not export
 * it, so every Windows program Rust builds exits with code 53 at start.
 * This DLL exports ProcessPrng and forwards to advapi32's
 * SystemFunction036 (RtlGenRandom), which Wine has. `.ci/wine` builds it
 * with mingw and puts it in the Wine prefix's system32, loaded ahead of
 * Wine's own (WINEDLLOVERRIDES=bcryptprimitives=n,b).
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
