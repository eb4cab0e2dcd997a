/*
 * A stand-in for Windows' bcryptprimitives.dll, for running fileagent.exe
 * under Wine 8.0 (Debian bookworm), which lacks it: Rust's std (1.78 and
 * later) takes its random numbers from ProcessPrng there before main runs,
 * and without the DLL the process exits silently with code 53.
 *
 * ProcessPrng is answered with RtlGenRandom (advapi32's SystemFunction036),
 * which Wine implements on the host's random source. A TEST FIXTURE: it is
 * copied into the test Wine prefix by cross/windows.sh and is never shipped;
 * real Windows has the real DLL.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
