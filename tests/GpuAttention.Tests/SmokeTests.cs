using NUnit.Framework;
namespace GpuAttention.Tests;
public class SmokeTests { [Test] public void CpuOpens() { using var d = Device.Open("cpu"); Assert.That(d.Kind, Is.EqualTo(BackendKind.Cpu)); } }
