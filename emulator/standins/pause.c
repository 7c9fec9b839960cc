/*
 * The emulator's stand-in for GPUStack's pause image (gpustack/runtime:pause): the first
 * container of every workload the GPUStack worker deploys holds the workload's namespaces
 * and does nothing else, as Kubernetes' pause container does. Built static, so the image
 * needs no libc (emulator/gpustack.py, pause_image()).
 */
#include <signal.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

int main(void)
{
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;)
        pause();
}
