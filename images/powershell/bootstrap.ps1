<#
scriptbox bootstrap for PowerShell runtimes (PowerShell Core 6.0, PowerShell 7.x).
Protocol version 1: see docs/protocol.md. Run as
    pwsh -NoLogo -NoProfile -NonInteractive -File /opt/scriptbox/bootstrap.ps1

In order, it:
 1. keeps the container's real stdout (a Stream) to itself for frames, and points Console.Out
    (Write-Host, warnings, verbose, [Console]::Write...) with [Console]::SetOut at a pipe that a
    pump runspace turns into O frames;
 2. reads the request from stdin as bytes: one JSON header line (at most 4 MiB), then exactly
    archive_bytes of ustar, which it parses itself (regular files with plain names only);
 3. expands the zips listed in `zips` with System.IO.Compression, with the checks of the protocol;
 4. applies the optional `aws` field (AWS variables; with a relay, a runspace relaying
    127.0.0.1:PORT to the egress Unix socket, and the proxy variables / AWS_ENDPOINT_URL);
    sets $env:InputPayload to the compact JSON of `payload`, makes the task folder the location,
    runs the script and collects its output pipeline;
 5. ends every other process of the sandbox (one could otherwise write a frame of its own before
    the result), then writes exactly one R frame and ends with [Environment]::Exit(0).

Choices made here (they cannot be seen from outside, so they are written down):
 - The script run is customer_script.ps1 (the inline Script). When the request carries no inline
   script, the single .ps1 file at the top level of the task folder after the zips are expanded is
   run instead; none or several is a HandlerNotFound failure.
 - Payload: the last object the script emits to its output pipeline (`return $x` included). A string
   is the payload as is (a JSON string inside the R frame); anything else goes through
   ConvertTo-Json -Depth 10 -Compress. An array as the last object (`return ,$list`) is a top-level
   list: cut to limits.payload_items. Earlier pipeline objects are output only: neither payload nor log.
 - Log: everything written to Console.Out (Write-Host, Write-Information, warnings, verbose, debug)
   becomes O frames; stderr stays the container's stderr.
 - Failure: a terminating error (throw) or any error record reaching the error stream (Write-Error, a
   cmdlet's non-terminating error). Errors the script handles itself (try/catch, -ErrorAction
   SilentlyContinue) are not failures. A native program's stderr lines are log, not errors. The
   first error wins: type is the .NET exception type name, frames come from its ScriptStackTrace.
 - `exit N` ends the script without failing the step: PowerShell cannot tell it from the exit code
   of the last native command.
 - The script runs inside a dynamic module, so the bootstrap's own variables are not visible to it.
 - Files get .NET's default mode 0666 and folders 0777, less the umask (Docker's 0022 gives 0644 and
   0755): .NET before 7 cannot chmod, and no exec, setuid or setgid bit is ever set.
 - Limitation: a process started outside PowerShell's pipeline (Start-Process -NoNewWindow,
   [Diagnostics.Process]::Start without redirection) inherits the container's real stdout, so its
   bytes land between frames and the host reports unframed output. Native commands called with `&`
   or by name are captured by the pipeline and are safe. Such processes are ended (SIGKILL) once the
   script returns, before the R frame, so none can write after the script's own end.
Keep this file compatible with PowerShell 6.0 (.NET Core 2.0): no ternaries, no ?? operators,
no -Parallel, no ConvertTo-Json -AsArray, no .NET APIs newer than 2.0 without a fallback.
Never use PowerShell's automatic pipeline-input variable (dollar sign + "input") in this file:
when a -File script mentions it, pwsh itself reads stdin as pipeline input and eats the request.
#>

# Everything runs inside this script block: pwsh -File runs a file in the global scope, which the
# customer's script (in its module) can see. Here the bootstrap's variables and functions stay local.
& {
    Set-StrictMode -Off
    $ErrorActionPreference = 'Stop'   # the bootstrap's own errors are terminating, so caught below

    $MaxHeaderBytes = 4MB
    $ChunkBytes = 64KB
    $MaxNameComponentBytes = 255
    $MaxNameBytes = 1024
    $FrameResult = 0x52   # 'R'
    $Utf8 = [System.Text.UTF8Encoding]::new($false)
    $StrictUtf8 = [System.Text.UTF8Encoding]::new($false, $true)
    $TaskDirPattern = '^/tmp/[0-9a-f-]{36}-[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}\z'   # \z: '$' would accept a trailing newline

    # ------------------------------------------------------------------------------------------------
    # Failures and frames
    # ------------------------------------------------------------------------------------------------

    function New-Failure([string]$Type, [string]$Message) {
        # A failure the bootstrap reports itself (ProtocolError, AttachmentError, HandlerNotFound).
        $exception = [System.Exception]::new($Message)
        $exception.Data['scriptbox.type'] = $Type
        return $exception
    }

    function Write-ResultFrame([string]$Json) {
        # The single R frame: 'R', big-endian u32 length, UTF-8 JSON body, written in one call.
        $body = $Utf8.GetBytes($Json)
        $frame = New-Object byte[] ($body.Length + 5)
        $frame[0] = [byte]$FrameResult
        $frame[1] = [byte](($body.Length -shr 24) -band 0xFF)
        $frame[2] = [byte](($body.Length -shr 16) -band 0xFF)
        $frame[3] = [byte](($body.Length -shr 8) -band 0xFF)
        $frame[4] = [byte]($body.Length -band 0xFF)
        [Array]::Copy($body, 0, $frame, 5, $body.Length)
        $RealStdout.Write($frame, 0, $frame.Length)
        $RealStdout.Flush()
    }

    # The pump runs in its own runspace (a thread): it reads what Console.Out writes into the pipe and
    # writes it to the real stdout as O frames, one at a time under the lock shared with the R frame.
    $PumpScript = {
        param($Reader, $Output, $Lock, $State)
        $buffer = New-Object byte[] 65536
        while ($true) {
            $count = 0
            try { $count = $Reader.Read($buffer, 0, $buffer.Length) } catch { $count = 0 }
            if ($count -le 0) { break }
            $frame = New-Object byte[] ($count + 5)
            $frame[0] = [byte]0x4F   # 'O'
            $frame[1] = [byte](($count -shr 24) -band 0xFF)
            $frame[2] = [byte](($count -shr 16) -band 0xFF)
            $frame[3] = [byte](($count -shr 8) -band 0xFF)
            $frame[4] = [byte]($count -band 0xFF)
            [Array]::Copy($buffer, 0, $frame, 5, $count)
            $Lock.Wait()
            try {
                if ($State.Closed) { break }   # the R frame is written: nothing may follow it
                if (-not $State.Broken) {
                    try { $Output.Write($frame, 0, $frame.Length); $Output.Flush() }
                    catch { $State.Broken = $true }   # host gone: keep draining, stop writing
                }
            }
            finally { [void]$Lock.Release() }
        }
    }

    function Start-OutputPump {
        # Console.Out -> anonymous pipe (not inheritable) -> pump runspace -> O frames on the real stdout.
        Add-Type -AssemblyName System.IO.Pipes   # type names resolve only from loaded assemblies
        $server = [System.IO.Pipes.AnonymousPipeServerStream]::new(
            [System.IO.Pipes.PipeDirection]::Out, [System.IO.HandleInheritability]::None)
        # Using ClientSafePipeHandle marks it exposed: disposing the server then closes only the write
        # end, and the pump reads EOF once everything written is drained.
        $client = [System.IO.Pipes.AnonymousPipeClientStream]::new(
            [System.IO.Pipes.PipeDirection]::In, $server.ClientSafePipeHandle)
        $writer = [System.IO.StreamWriter]::new($server, $Utf8)
        $writer.AutoFlush = $true   # a line written is a line logged, even if the step is killed later
        [Console]::SetOut($writer)

        $runspace = [runspacefactory]::CreateRunspace(
            [System.Management.Automation.Runspaces.InitialSessionState]::CreateDefault2())
        $runspace.Open()
        $pump = [powershell]::Create()
        $pump.Runspace = $runspace
        [void]$pump.AddScript($PumpScript).AddArgument($client).AddArgument($RealStdout).AddArgument($FrameLock).AddArgument($PumpState)
        return @{ Async = $pump.BeginInvoke(); Server = $server; Writer = $writer }
    }

    function Stop-OutputPump($Pump) {
        # Close the pipe's write end and give the pump a moment to drain it; frames stop after that.
        try { [Console]::Out.Flush() } catch { }
        [Console]::SetOut([System.IO.TextWriter]::Null)   # late writes go nowhere, never after R
        if ($null -eq $Pump) { return }
        try { $Pump.Writer.Dispose() } catch { }
        try { $Pump.Server.Dispose() } catch { }
        [void]$Pump.Async.AsyncWaitHandle.WaitOne(2000)
    }

    # ------------------------------------------------------------------------------------------------
    # Ending the sandbox's other processes before the result
    # ------------------------------------------------------------------------------------------------

    function Test-MayEndOtherProcesses {
        # Only where "every other process" means the sandbox's own: the init of its own PID namespace,
        # or the child of a container init (Docker's Init: true runs tini as docker-init), and not
        # root. Anywhere else (a host, under a host's init, a debugging session) the bootstrap never
        # signals processes that are not its own.
        try {
            $stat = [System.IO.File]::ReadAllText('/proc/self/stat')
            $fields = $stat.Substring($stat.LastIndexOf(')') + 2).Split(' ')   # state, ppid, ...
            $parent = [int]$fields[1]
            $uidLine = [System.IO.File]::ReadAllLines('/proc/self/status') | Where-Object { $_.StartsWith('Uid:') } | Select-Object -First 1
            $euid = [int](($uidLine -split '\s+')[2])   # Uid: real effective saved fs
            $initArgv0 = [System.IO.File]::ReadAllText('/proc/1/cmdline').Split([char]0)[0]
            $init = [System.IO.Path]::GetFileName($initArgv0)
        } catch {
            return $false
        }
        if ($euid -eq 0) { return $false }
        if ($PID -eq 1) { return $true }
        $containerInits = @('docker-init', 'tini', 'tini-static', 'catatonit', 'podman-init', 'dumb-init')
        return ($parent -eq 1 -and $containerInits -contains $init)
    }

    function Get-OtherLiveProcessIds {
        # PIDs in /proc other than init and this one that are not dead yet (zombies cannot write).
        $ids = New-Object 'System.Collections.Generic.List[int]'
        foreach ($dir in [System.IO.Directory]::GetDirectories('/proc')) {
            $id = 0
            if (-not [int]::TryParse([System.IO.Path]::GetFileName($dir), [ref]$id)) { continue }
            if ($id -eq 1 -or $id -eq $PID) { continue }
            $stat = $null
            try { $stat = [System.IO.File]::ReadAllText("/proc/$id/stat") } catch { continue }
            $close = $stat.LastIndexOf(')')
            if ($close -lt 0 -or $close + 2 -ge $stat.Length) { continue }
            $state = $stat.Substring($close + 2, 1)   # the command name may hold ')': after the last one
            if ($state -ne 'Z' -and $state -ne 'X') { $ids.Add($id) }
        }
        return ,$ids
    }

    function Stop-OtherProcesses([double]$BoundSeconds) {
        # SIGKILL (Process.Kill on Unix) every other process until none is alive or the bound passes.
        $deadline = [DateTime]::UtcNow.AddSeconds($BoundSeconds)
        while ($true) {
            $alive = Get-OtherLiveProcessIds
            if ($alive.Count -eq 0) { return }
            foreach ($id in $alive) {
                try { [System.Diagnostics.Process]::GetProcessById($id).Kill() } catch { }
            }
            if ([DateTime]::UtcNow -ge $deadline) { return }
            Start-Sleep -Milliseconds 5
        }
    }

    # ------------------------------------------------------------------------------------------------
    # Request: header
    # ------------------------------------------------------------------------------------------------

    function Read-RequestHeader($Stdin, $Leftover) {
        # Read the header line (bounded) from stdin; bytes read past the newline go into $Leftover
        # (a MemoryStream): they are the start of the archive. Returns the header text.
        $line = [System.IO.MemoryStream]::new()
        $chunk = New-Object byte[] $ChunkBytes
        while ($true) {
            $count = $Stdin.Read($chunk, 0, $chunk.Length)
            if ($count -le 0) { throw (New-Failure 'ProtocolError' 'header line missing or not terminated by a newline') }
            $newline = [Array]::IndexOf($chunk, [byte]10, 0, $count)
            if ($newline -ge 0) {
                $line.Write($chunk, 0, $newline)
                $Leftover.Write($chunk, $newline + 1, $count - $newline - 1)
                break
            }
            $line.Write($chunk, 0, $count)
            if ($line.Length -gt $MaxHeaderBytes) { break }
        }
        if ($line.Length -gt $MaxHeaderBytes) {
            throw (New-Failure 'ProtocolError' "header line over $MaxHeaderBytes bytes")
        }
        try {
            return $StrictUtf8.GetString($line.ToArray())
        } catch {
            throw (New-Failure 'ProtocolError' 'header is not UTF-8')
        }
    }

    function Get-JsonString($Object, [string]$Name) {
        # A string field of a Newtonsoft JObject, or $null when absent or not a string.
        $token = $Object.GetValue($Name)
        if ($null -eq $token -or $token.Type -ne 'String') { return $null }
        return [string]$token.Value
    }

    function Get-JsonCount($Object, [string]$Name) {
        # A non-negative integer field of a Newtonsoft JObject, or -1 when absent or not one.
        $token = $Object.GetValue($Name)
        if ($null -eq $token -or $token.Type -ne 'Integer') { return -1 }
        $value = [long]$token.Value
        if ($value -lt 0) { return -1 }
        return $value
    }

    function ConvertFrom-RequestHeader([string]$Text) {
        # Parse and check the header; return a hashtable of plain values.
        # Newtonsoft (shipped with pwsh) rather than ConvertFrom-Json: the payload must reach the script
        # exactly as sent (ConvertFrom-Json turns date-like strings into DateTime and refuses keys that
        # differ only in case). JTokens are never returned from a function: PowerShell would enumerate them.
        if ($null -eq ('Newtonsoft.Json.Linq.JToken' -as [type])) {
            $null = '{}' | ConvertFrom-Json   # ConvertFrom-Json loads Newtonsoft.Json into the session
        }
        if ($null -eq ('Newtonsoft.Json.Linq.JToken' -as [type])) {
            [void][System.Reflection.Assembly]::LoadFrom((Join-Path $PSHOME 'Newtonsoft.Json.dll'))
        }
        try {
            $reader = [Newtonsoft.Json.JsonTextReader]::new([System.IO.StringReader]::new($Text))
            $reader.DateParseHandling = [Newtonsoft.Json.DateParseHandling]::None
            $reader.MaxDepth = 1000
            $root = [Newtonsoft.Json.Linq.JToken]::ReadFrom($reader)
            if ($reader.Read()) { throw 'trailing data after the JSON value' }
        } catch {
            throw (New-Failure 'ProtocolError' ("header is not JSON: " + $_.Exception.Message))
        }
        if ($root.Type -ne 'Object') { throw (New-Failure 'ProtocolError' 'header is not a JSON object') }

        $version = Get-JsonCount $root 'v'
        if ($version -ne 1) { throw (New-Failure 'ProtocolError' 'unsupported protocol version (expected 1)') }
        $taskDir = Get-JsonString $root 'task_dir'
        if ($null -eq $taskDir -or $taskDir -cnotmatch $TaskDirPattern) {
            throw (New-Failure 'ProtocolError' "task_dir '$taskDir' is not /tmp/<uuid>-<yyyy-mm-dd-HH-MM-SS>")
        }
        $language = Get-JsonString $root 'language'
        if ($language -ne 'powershell') { throw (New-Failure 'ProtocolError' "language '$language' is not powershell") }
        $payload = $root.GetValue('payload')
        if ($null -eq $payload) { throw (New-Failure 'ProtocolError' 'payload is missing') }
        $context = $root.GetValue('context')
        if ($null -eq $context -or $context.Type -ne 'Object') { throw (New-Failure 'ProtocolError' 'context must be an object') }

        $zips = [System.Collections.Generic.List[string]]::new()
        $zipsToken = $root.GetValue('zips')
        if ($null -ne $zipsToken) {
            if ($zipsToken.Type -ne 'Array') { throw (New-Failure 'ProtocolError' 'zips must be a list of names') }
            foreach ($item in $zipsToken) {
                if ($item.Type -ne 'String') { throw (New-Failure 'ProtocolError' 'zips must be a list of names') }
                if ($zips.Contains([string]$item.Value)) { throw (New-Failure 'ProtocolError' 'zips lists a name twice') }
                $zips.Add([string]$item.Value)
            }
        }
        $limits = $root.GetValue('limits')
        if ($null -eq $limits -or $limits.Type -ne 'Object') { throw (New-Failure 'ProtocolError' 'limits must be an object') }
        foreach ($key in 'unzip_bytes', 'unzip_entries', 'payload_items') {
            if ((Get-JsonCount $limits $key) -lt 0) { throw (New-Failure 'ProtocolError' "limits.$key must be a non-negative integer") }
        }
        $aws = ConvertFrom-AwsField $root.GetValue('aws')
        $archiveBytes = Get-JsonCount $root 'archive_bytes'
        if ($archiveBytes -lt 0 -or $archiveBytes -gt [int]::MaxValue) {
            throw (New-Failure 'ProtocolError' 'archive_bytes must be a non-negative integer')
        }
        return @{
            TaskDir      = $taskDir
            PayloadJson  = $payload.ToString([Newtonsoft.Json.Formatting]::None, [Newtonsoft.Json.JsonConverter[]]@())
            Zips         = $zips
            UnzipBytes   = Get-JsonCount $limits 'unzip_bytes'
            UnzipEntries = Get-JsonCount $limits 'unzip_entries'
            PayloadItems = Get-JsonCount $limits 'payload_items'
            ArchiveBytes = $archiveBytes
            Aws          = $aws
        }
    }

    function Read-Archive($Stdin, $Leftover, [long]$Size) {
        # Exactly $Size bytes of archive: what followed the header line, then the rest of stdin.
        # `return ,` keeps PowerShell from unrolling the byte array into the pipeline.
        $archive = New-Object byte[] ([int]$Size)
        $have = [int][Math]::Min($Leftover.Length, $Size)
        [Array]::Copy($Leftover.ToArray(), 0, $archive, 0, $have)
        while ($have -lt $Size) {
            $count = $Stdin.Read($archive, $have, [int]($Size - $have))
            if ($count -le 0) { throw (New-Failure 'ProtocolError' "archive truncated: $($Size - $have) of $Size bytes missing") }
            $have += $count
        }
        return , $archive
    }

    # ------------------------------------------------------------------------------------------------
    # Request: the ustar archive (parsed here: no tar program, no extraction library)
    # ------------------------------------------------------------------------------------------------

    function Test-PlainName([string]$Name) {
        # Why a name is not a plain file name of the task folder, or $null when it is one.
        if ([string]::IsNullOrEmpty($Name) -or $Name -eq '.' -or $Name -eq '..') { return 'not a plain file name' }
        if ($Name.Contains('/') -or $Name.Contains([string][char]0)) { return "name holds '/' or NUL" }
        if ($Utf8.GetByteCount($Name) -gt $MaxNameComponentBytes) { return "name longer than $MaxNameComponentBytes bytes" }
        return $null
    }

    function Read-TarText([byte[]]$Data, [int]$Offset, [int]$Length) {
        # A NUL-terminated field, decoded as strict UTF-8.
        $end = $Offset
        while ($end -lt $Offset + $Length -and $Data[$end] -ne 0) { $end++ }
        return $StrictUtf8.GetString($Data, $Offset, $end - $Offset)
    }

    function Read-TarNumber([byte[]]$Data, [int]$Offset, [int]$Length) {
        # An octal field (NUL/space padded). Base-256 sizes (over 8 GiB) are refused.
        if (($Data[$Offset] -band 0x80) -ne 0) { throw (New-Failure 'ProtocolError' 'archive uses base-256 numbers') }
        $text = [System.Text.Encoding]::ASCII.GetString($Data, $Offset, $Length).Trim([char[]]@([char]0, [char]32))
        if ($text -notmatch '^[0-7]+$') { throw (New-Failure 'ProtocolError' 'archive header has a bad number field') }
        return [Convert]::ToInt64($text, 8)
    }

    function Test-ZeroBlock([byte[]]$Data, [int]$Offset) {
        # True for the all-zero block that ends an archive.
        for ($i = $Offset; $i -lt $Offset + 512; $i++) { if ($Data[$i] -ne 0) { return $false } }
        return $true
    }

    function Write-NewFile([string]$Path, [byte[]]$Data, [int]$Offset, [int]$Count) {
        # CreateNew: never overwrite, and never write through a symbolic link (O_CREAT|O_EXCL).
        $stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
        try { $stream.Write($Data, $Offset, $Count) } finally { $stream.Dispose() }
    }

    function Write-ArchiveFiles([byte[]]$Archive, [string]$TaskDir, $Written) {
        # Write every member (regular files with plain names) into the task folder; names go to $Written.
        # GNU long-name entries ('L', what the host's tar writer emits for names over 100 bytes) are read.
        $offset = 0
        $longName = $null
        while ($offset -lt $Archive.Length) {
            if ($offset + 512 -gt $Archive.Length) { throw (New-Failure 'ProtocolError' 'archive truncated inside a header') }
            if (Test-ZeroBlock $Archive $offset) { break }
            if ([System.Text.Encoding]::ASCII.GetString($Archive, $offset + 257, 5) -ne 'ustar') {
                throw (New-Failure 'ProtocolError' 'archive is not a valid ustar stream (bad magic)')
            }
            $checksum = 0
            for ($i = 0; $i -lt 512; $i++) {
                if ($i -ge 148 -and $i -lt 156) { $checksum += 32 } else { $checksum += $Archive[$offset + $i] }
            }
            if ($checksum -ne (Read-TarNumber $Archive ($offset + 148) 8)) {
                throw (New-Failure 'ProtocolError' 'archive is not a valid ustar stream (bad checksum)')
            }
            $size = Read-TarNumber $Archive ($offset + 124) 12
            $dataStart = $offset + 512
            if ($dataStart + $size -gt $Archive.Length) { throw (New-Failure 'ProtocolError' 'archive truncated inside a member') }
            $type = $Archive[$offset + 156]
            $name = $longName
            $longName = $null
            if ($null -eq $name) {
                $name = Read-TarText $Archive $offset 100
                $prefix = Read-TarText $Archive ($offset + 345) 155
                if ($prefix) { $name = "$prefix/$name" }
            }
            if ($type -eq 76) {
                # 'L': the data is the name of the next member.
                $longName = Read-TarText $Archive $dataStart ([int]$size)
            } elseif ($type -eq 48 -or $type -eq 0) {
                # '0' or NUL: a regular file.
                $problem = Test-PlainName $name
                if ($problem) { throw (New-Failure 'ProtocolError' "archive member '$name': $problem") }
                if ($Written.Contains($name)) { throw (New-Failure 'ProtocolError' "archive member '$name' appears twice") }
                try {
                    Write-NewFile "$TaskDir/$name" $Archive $dataStart ([int]$size)
                } catch {
                    throw (New-Failure 'ProtocolError' ("cannot write archive member '$name': " + $_.Exception.Message))
                }
                [void]$Written.Add($name)
            } else {
                throw (New-Failure 'ProtocolError' "archive member '$name' is not a regular file")
            }
            $offset = $dataStart + [int]([Math]::Ceiling($size / 512.0) * 512)
        }
    }

    # ------------------------------------------------------------------------------------------------
    # Zip attachments
    # ------------------------------------------------------------------------------------------------

    function Get-ZipEntryMode($Entry) {
        # The Unix mode bits of a zip entry (external attributes >> 16), 0 when none are recorded.
        # ExternalAttributes is public from .NET Core 2.1 (PowerShell 6.1); 6.0 has only the field.
        $attributes = 0
        if ($null -ne $Entry.PSObject.Properties['ExternalAttributes']) {
            $attributes = [int]$Entry.ExternalAttributes
        } else {
            $field = $Entry.GetType().GetField('_externalFileAttr', [System.Reflection.BindingFlags]'NonPublic,Instance')
            if ($null -ne $field) { $attributes = [int64]$field.GetValue($Entry) }
        }
        return (([int64]$attributes -shr 16) -band 0xFFFF)
    }

    function Test-ZipMemberName([string]$Name) {
        # Why a zip member name breaks the rules, or $null; components are checked one by one.
        if ($Name.Contains([string][char]0)) { return 'name holds NUL' }
        if ($Name.Contains('\')) { return 'name holds a backslash' }
        if ($Name.StartsWith('/')) { return 'absolute path' }
        if ($Utf8.GetByteCount($Name) -gt $MaxNameBytes) { return "name longer than $MaxNameBytes bytes" }
        $body = $Name
        if ($body.EndsWith('/')) { $body = $body.Substring(0, $body.Length - 1) }
        foreach ($component in $body.Split('/')) {
            if ($component -eq '..') { return "path has a '..' component" }
            if ($component -eq '' -or $component -eq '.') { return "path has an empty or '.' component" }
            if ($Utf8.GetByteCount($component) -gt $MaxNameComponentBytes) { return "path component longer than $MaxNameComponentBytes bytes" }
        }
        return $null
    }

    function New-ZipDirectories([string]$TaskDir, [string[]]$Components, $Files, $Dirs) {
        # Create each missing folder of a relative path; a file in the way is an error.
        for ($depth = 1; $depth -le $Components.Length; $depth++) {
            $relative = [string]::Join('/', $Components, 0, $depth)
            if ($Dirs.Contains($relative)) { continue }
            if ($Files.Contains($relative)) { return "'$relative' is already a file" }
            [void][System.IO.Directory]::CreateDirectory("$TaskDir/$relative")
            [void]$Dirs.Add($relative)
        }
        return $null
    }

    function Expand-ZipAttachment([string]$ZipName, [string]$TaskDir, $Files, $Dirs, $Budget) {
        # Expand one zip attachment with the protocol's checks; bytes and entries are counted as written.
        $fail = { param($member, $rule) New-Failure 'AttachmentError' "zip '$ZipName', member '$member': $rule" }
        try {
            $file = [System.IO.File]::OpenRead("$TaskDir/$ZipName")
            $zip = [System.IO.Compression.ZipArchive]::new($file, [System.IO.Compression.ZipArchiveMode]::Read)
        } catch {
            throw (& $fail '' ("not a valid zip file: " + $_.Exception.Message))
        }
        $buffer = New-Object byte[] $ChunkBytes
        try {
            foreach ($entry in $zip.Entries) {
                $member = $entry.FullName
                $Budget.Entries += 1
                if ($Budget.Entries -gt $Budget.MaxEntries) { throw (& $fail $member "more than limits.unzip_entries ($($Budget.MaxEntries)) entries") }
                $problem = Test-ZipMemberName $member
                if ($problem) { throw (& $fail $member $problem) }
                $isDir = $member.EndsWith('/')
                $mode = Get-ZipEntryMode $entry
                $fileType = $mode -band 0xF000
                if ($fileType -eq 0xA000) { throw (& $fail $member 'symbolic links are refused') }
                if ($fileType -ne 0 -and $fileType -ne 0x8000 -and $fileType -ne 0x4000) {
                    throw (& $fail $member 'special files (devices, fifos, sockets) are refused')
                }
                if ($fileType -ne 0 -and (($fileType -eq 0x4000) -ne $isDir)) { throw (& $fail $member 'entry type does not match its name') }
                $relative = $member.TrimEnd('/')
                $components = $relative.Split('/')
                if ($Files.Contains($relative)) { throw (& $fail $member 'a file of that name was already written') }
                if ($isDir) {
                    $problem = New-ZipDirectories $TaskDir $components $Files $Dirs
                    if ($problem) { throw (& $fail $member $problem) }
                    continue
                }
                if ($Dirs.Contains($relative)) { throw (& $fail $member 'a directory of that name was already written') }
                if ($components.Length -gt 1) {
                    $problem = New-ZipDirectories $TaskDir ($components[0..($components.Length - 2)]) $Files $Dirs
                    if ($problem) { throw (& $fail $member $problem) }
                }
                try {
                    $source = $entry.Open()
                    $target = [System.IO.File]::Open("$TaskDir/$relative", [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
                } catch {
                    throw (& $fail $member $_.Exception.Message)
                }
                try {
                    while (($count = $source.Read($buffer, 0, $buffer.Length)) -gt 0) {
                        # Counted while decompressing, not from the zip's headers; over the limit,
                        # the chunk is not written.
                        if ($Budget.Bytes + $count -gt $Budget.MaxBytes) {
                            throw (& $fail $member "expanded size over limits.unzip_bytes ($($Budget.MaxBytes) bytes)")
                        }
                        $Budget.Bytes += $count
                        $target.Write($buffer, 0, $count)
                    }
                } catch {
                    if ($_.Exception.Data['scriptbox.type']) { throw }
                    throw (& $fail $member $_.Exception.Message)
                } finally {
                    $target.Dispose()
                    $source.Dispose()
                }
                [void]$Files.Add($relative)
            }
        } catch {
            if ($_.Exception.Data['scriptbox.type']) { throw }
            throw (& $fail '' ("cannot read the zip: " + $_.Exception.Message))   # e.g. a corrupt central directory
        } finally {
            $zip.Dispose()
            $file.Dispose()
        }
    }

    # ------------------------------------------------------------------------------------------------
    # AWS egress: the header's `aws` field (variables, the relay to the egress Unix socket)
    # The same rules and behaviour as images/python/bootstrap.py (docs/protocol.md, "AWS egress").
    # NOT RUN on the machine this was written on (no PowerShell image, no pwsh there): it follows
    # the Python logic line by line and is checked only statically by tests/bootstrap.
    # ------------------------------------------------------------------------------------------------

    $AwsEnvNamePattern = '^AWS_[A-Z0-9_]{1,64}\z'   # -cmatch: case-sensitive; \z: no trailing newline
    $MaxAwsEnvEntries = 16
    $MaxAwsEnvValueChars = 8192
    $MaxRelaySocketBytes = 100
    $RelayBufferBytes = 64KB   # per direction: CopyToAsync reads the next chunk only once this one is written
    $MaxRelayConnections = 64
    $NoProxyValue = '127.0.0.1,localhost'

    function Assert-KnownKeys($Object, [string[]]$Allowed, [string]$Field) {
        # Refuse keys of a JObject other than the allowed ones, naming the first one found.
        foreach ($property in $Object.Properties()) {
            if ($Allowed -cnotcontains $property.Name) {
                throw (New-Failure 'ProtocolError' ("${Field}: unknown key '" + $property.Name + "' (allowed: " + ($Allowed -join ', ') + ")"))
            }
        }
    }

    function Test-Utf8Encodable([string]$Text) {
        # False for a string holding a lone surrogate (JSON can carry one, the environment cannot).
        try { [void]$StrictUtf8.GetByteCount($Text); return $true } catch { return $false }
    }

    function ConvertFrom-AwsEnv($Token) {
        # aws.env: at most 16 AWS_* names with bounded NUL-free string values. The values are
        # credentials: no message ever quotes one. Returns an ordered dictionary (name -> value).
        $variables = [ordered]@{}
        if ($null -eq $Token) { return $variables }   # absent: no variables (null is refused, as in Python)
        if ($Token.Type -ne 'Object') { throw (New-Failure 'ProtocolError' 'aws.env must be an object of names to strings') }
        $count = @($Token.Properties()).Count
        if ($count -gt $MaxAwsEnvEntries) { throw (New-Failure 'ProtocolError' "aws.env has $count entries (at most $MaxAwsEnvEntries)") }
        foreach ($property in $Token.Properties()) {
            $name = [string]$property.Name
            if ($name -cnotmatch $AwsEnvNamePattern) {
                $shown = $name
                if ($shown.Length -gt 100) { $shown = $shown.Substring(0, 100) }
                throw (New-Failure 'ProtocolError' "aws.env name '$shown' does not match ^AWS_[A-Z0-9_]{1,64}`$")
            }
            if ($property.Value.Type -ne 'String') { throw (New-Failure 'ProtocolError' "aws.env.$name must be a string") }
            $value = [string]$property.Value.Value
            if ($value.Length -gt $MaxAwsEnvValueChars) { throw (New-Failure 'ProtocolError' "aws.env.$name is longer than $MaxAwsEnvValueChars characters") }
            if ($value.Contains([string][char]0) -or -not (Test-Utf8Encodable $value)) { throw (New-Failure 'ProtocolError' "aws.env.$name holds NUL or a lone surrogate") }
            $variables[$name] = $value
        }
        return $variables
    }

    function ConvertFrom-AwsRelay($Token) {
        # aws.relay: null, or {socket: an absolute path of at most 100 bytes, endpoint: a bool}.
        if ($null -eq $Token -or $Token.Type -eq 'Null') { return $null }
        if ($Token.Type -ne 'Object') { throw (New-Failure 'ProtocolError' 'aws.relay must be null or an object with socket and endpoint') }
        Assert-KnownKeys $Token @('socket', 'endpoint') 'aws.relay'
        $socketToken = $Token.GetValue('socket')
        if ($null -eq $socketToken -or $socketToken.Type -ne 'String' -or -not ([string]$socketToken.Value).StartsWith('/')) {
            throw (New-Failure 'ProtocolError' 'aws.relay.socket must be an absolute path')
        }
        $path = [string]$socketToken.Value
        if ($path.Contains([string][char]0) -or -not (Test-Utf8Encodable $path)) { throw (New-Failure 'ProtocolError' 'aws.relay.socket holds NUL or a lone surrogate') }
        if ($Utf8.GetByteCount($path) -gt $MaxRelaySocketBytes) { throw (New-Failure 'ProtocolError' "aws.relay.socket is longer than $MaxRelaySocketBytes bytes") }
        $endpointToken = $Token.GetValue('endpoint')
        if ($null -eq $endpointToken -or $endpointToken.Type -ne 'Boolean') { throw (New-Failure 'ProtocolError' 'aws.relay.endpoint must be true or false') }
        return @{ Socket = $path; Endpoint = [bool]$endpointToken.Value }
    }

    function ConvertFrom-AwsField($Token) {
        # The optional `aws` field: $null when absent or null, else @{ Env; Relay }.
        if ($null -eq $Token -or $Token.Type -eq 'Null') { return $null }
        if ($Token.Type -ne 'Object') { throw (New-Failure 'ProtocolError' 'aws must be null or an object with env and relay') }
        Assert-KnownKeys $Token @('env', 'relay') 'aws'
        $variables = ConvertFrom-AwsEnv $Token.GetValue('env')
        $relay = ConvertFrom-AwsRelay $Token.GetValue('relay')
        return @{ Env = $variables; Relay = $relay }
    }

    # The relay runs in its own runspace (a thread), as one loop over .NET tasks: an accept task and,
    # per connection, two CopyToAsync tasks (one per direction, each with one 64 KiB buffer, so a
    # side is not read while its bytes wait to be written: backpressure). When one direction ends
    # (EOF), writing is shut down on the other side; when both have ended, or either failed, both
    # sockets are closed. Task.WaitAny with a timeout: the loop never spins. It writes nothing to
    # the console; every error ends one connection, never the loop.
    $RelayScript = {
        param($Listener, $SocketPath, $BufferBytes, $MaxConnections)
        $pairs = New-Object System.Collections.ArrayList
        $endpoint = [System.Net.Sockets.UnixDomainSocketEndPoint]::new($SocketPath)
        $accept = $null
        while ($true) {
            try {
                if ($null -eq $accept) { $accept = $Listener.AcceptSocketAsync() }
                $tasks = New-Object 'System.Collections.Generic.List[System.Threading.Tasks.Task]'
                $tasks.Add($accept)
                foreach ($pair in $pairs) {
                    if (-not $pair.UpDone) { $tasks.Add($pair.Up) }
                    if (-not $pair.DownDone) { $tasks.Add($pair.Down) }
                }
                [void][System.Threading.Tasks.Task]::WaitAny($tasks.ToArray(), 1000)
                if ($accept.IsCompleted) {
                    $client = $null
                    if ($accept.Status -eq 'RanToCompletion') { $client = $accept.Result }
                    else { Start-Sleep -Milliseconds 50 }   # accept failed (EMFILE...): never spin
                    $accept = $null
                    if ($null -ne $client) {
                        if ($pairs.Count -ge $MaxConnections) {
                            $client.Dispose()   # over the cap: closed at once
                        } else {
                            $upstream = [System.Net.Sockets.Socket]::new([System.Net.Sockets.AddressFamily]::Unix, [System.Net.Sockets.SocketType]::Stream, [System.Net.Sockets.ProtocolType]::Unspecified)
                            $connected = $false
                            try { $upstream.Connect($endpoint); $connected = $true } catch { }
                            if (-not $connected) {
                                $upstream.Dispose()
                                $client.Dispose()   # no egress socket: the client sees its connection closed
                            } else {
                                $clientStream = [System.Net.Sockets.NetworkStream]::new($client, $false)
                                $upstreamStream = [System.Net.Sockets.NetworkStream]::new($upstream, $false)
                                [void]$pairs.Add(@{
                                    Client = $client; Upstream = $upstream
                                    Up = $clientStream.CopyToAsync($upstreamStream, $BufferBytes)
                                    Down = $upstreamStream.CopyToAsync($clientStream, $BufferBytes)
                                    UpDone = $false; DownDone = $false
                                })
                            }
                        }
                    }
                }
                foreach ($pair in @($pairs)) {
                    $failed = $false
                    if (-not $pair.UpDone -and $pair.Up.IsCompleted) {
                        $pair.UpDone = $true
                        if ($pair.Up.Status -ne 'RanToCompletion') { $failed = $true }
                        else { try { $pair.Upstream.Shutdown([System.Net.Sockets.SocketShutdown]::Send) } catch { $failed = $true } }
                    }
                    if (-not $pair.DownDone -and $pair.Down.IsCompleted) {
                        $pair.DownDone = $true
                        if ($pair.Down.Status -ne 'RanToCompletion') { $failed = $true }
                        else { try { $pair.Client.Shutdown([System.Net.Sockets.SocketShutdown]::Send) } catch { $failed = $true } }
                    }
                    if ($failed -or ($pair.UpDone -and $pair.DownDone)) {
                        # Disposing ends the copy still running (it fails, and is never waited for again).
                        try { $pair.Client.Dispose() } catch { }
                        try { $pair.Upstream.Dispose() } catch { }
                        $pair.UpDone = $true
                        $pair.DownDone = $true
                        $pairs.Remove($pair)
                    }
                }
            } catch {
                if ($null -ne $accept -and $accept.IsCompleted) { $accept = $null }   # a pending accept is kept
                Start-Sleep -Milliseconds 50   # a bug here: breathe, never spin
            }
        }
    }

    function Start-AwsRelay($Relay) {
        # Listen on 127.0.0.1 (port 0: the kernel picks one), start the relay runspace; return the URL.
        if ($null -eq ('System.Net.Sockets.UnixDomainSocketEndPoint' -as [type])) {
            throw (New-Failure 'BootstrapError' 'cannot start the AWS relay: this PowerShell has no UnixDomainSocketEndPoint (.NET Core 2.1 / PowerShell 6.1 or newer is needed)')
        }
        try {
            $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
            $listener.Start(128)
        } catch {
            throw (New-Failure 'BootstrapError' ("cannot start the AWS relay on 127.0.0.1: " + $_.Exception.Message))
        }
        $port = ([System.Net.IPEndPoint]$listener.LocalEndpoint).Port
        $runspace = [runspacefactory]::CreateRunspace(
            [System.Management.Automation.Runspaces.InitialSessionState]::CreateDefault2())
        $runspace.Open()
        $shell = [powershell]::Create()
        $shell.Runspace = $runspace
        [void]$shell.AddScript($RelayScript).AddArgument($listener).AddArgument($Relay.Socket).AddArgument($RelayBufferBytes).AddArgument($MaxRelayConnections)
        # Kept referenced until the process ends ([Environment]::Exit ends this thread with it).
        [void]$AwsRelays.Add(@{ Shell = $shell; Async = $shell.BeginInvoke(); Listener = $listener })
        return "http://127.0.0.1:$port"
    }

    function Initialize-AwsEgress($Aws) {
        # Apply the header's `aws` field before the customer's script runs.
        if ($null -eq $Aws) { return }
        foreach ($name in $Aws.Env.Keys) {
            [Environment]::SetEnvironmentVariable($name, [string]$Aws.Env[$name])   # never printed
        }
        if ($null -eq $Aws.Relay) { return }
        $url = Start-AwsRelay $Aws.Relay
        foreach ($name in 'HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy') {
            [Environment]::SetEnvironmentVariable($name, $url)
        }
        # The endpoint below is the relay itself: reached directly, never through the proxy.
        [Environment]::SetEnvironmentVariable('NO_PROXY', $NoProxyValue)
        [Environment]::SetEnvironmentVariable('no_proxy', $NoProxyValue)
        if ($Aws.Relay.Endpoint) { [Environment]::SetEnvironmentVariable('AWS_ENDPOINT_URL', $url) }
    }

    # ------------------------------------------------------------------------------------------------
    # Running the script
    # ------------------------------------------------------------------------------------------------

    function Get-CustomerFrames($ErrorRecord, [string]$TaskDir) {
        # The error's frames inside the task folder, outermost first (ScriptStackTrace is innermost
        # first); the error's own position when there is no stack trace.
        $frames = [System.Collections.Generic.List[object]]::new()
        $prefix = "$TaskDir/"
        $trace = [string]$ErrorRecord.ScriptStackTrace
        foreach ($line in ($trace -split "`r?`n")) {
            if ($line -match '^at (?<function>.*?), (?<file>.*): line (?<line>\d+)$' -and $Matches['file'].StartsWith($prefix)) {
                $frames.Insert(0, (New-Frame $Matches['file'] ([int]$Matches['line']) $Matches['function']))
            }
        }
        $info = $ErrorRecord.InvocationInfo
        if ($frames.Count -eq 0 -and $null -ne $info -and ([string]$info.ScriptName).StartsWith($prefix)) {
            $frames.Add((New-Frame $info.ScriptName $info.ScriptLineNumber '<ScriptBlock>'))
        }
        return , $frames.ToArray()
    }

    function New-Frame([string]$File, [int]$Line, [string]$Function) {
        # One frame, with the source line read back from the file.
        $code = ''
        try {
            $lines = [System.IO.File]::ReadAllLines($File)
            if ($Line -ge 1 -and $Line -le $lines.Length) { $code = $lines[$Line - 1].Trim() }
        } catch { }
        return [ordered]@{ 'file' = $File; 'line' = $Line; 'function' = $Function; 'code' = $code }
    }

    function ConvertTo-FailureBody([string]$Type, [string]$Message, $Frames) {
        # The R frame body of a failed step.
        $details = [ordered]@{ 'type' = $Type; 'message' = $Message; 'frames' = @($Frames | Where-Object { $null -ne $_ }) }
        return (ConvertTo-Json -InputObject ([ordered]@{ 'ok' = $false; 'error' = $details }) -Depth 5 -Compress)
    }

    function ConvertTo-ErrorBody($ErrorRecord, [string]$TaskDir) {
        # Describe a script error: .NET exception type name, its message, the customer's frames.
        $typeName = $ErrorRecord.Exception.GetType().Name
        $message = $ErrorRecord.Exception.Message
        $frames = Get-CustomerFrames $ErrorRecord $TaskDir
        return ConvertTo-FailureBody $typeName $message $frames
    }

    function ConvertTo-PayloadBody($Value, [int]$MaxItems) {
        # The R frame body of a successful step: the last pipeline object as a JSON value.
        $originalItems = $null
        if ($null -eq $Value) {
            $json = 'null'
        } elseif ($Value -is [string]) {
            # Newtonsoft directly: ConvertTo-Json would also serialize note properties that PowerShell
            # attaches to strings (PSPath... of Get-Content lines).
            $json = [Newtonsoft.Json.JsonConvert]::ToString([string]$Value)
        } else {
            if ($Value -is [System.Collections.IList] -and $Value.Count -gt $MaxItems) {
                $originalItems = $Value.Count
                $cut = [System.Collections.Generic.List[object]]::new()
                for ($i = 0; $i -lt $MaxItems; $i++) { $cut.Add($Value[$i]) }
                $Value = $cut
            }
            $json = ConvertTo-Json -InputObject $Value -Depth 10 -Compress
        }
        $body = '{"ok":true,"payload":' + $json
        if ($null -ne $originalItems) { $body += ',"payload_items":' + $originalItems }
        return $body + '}'
    }

    function Find-ScriptToRun([string]$TaskDir) {
        # customer_script.ps1, else the single top-level .ps1 (from the attachment).
        $inline = "$TaskDir/customer_script.ps1"
        if ([System.IO.File]::Exists($inline)) { return $inline }
        $candidates = @([System.IO.Directory]::GetFiles($TaskDir) | Where-Object { $_.EndsWith('.ps1') })
        if ($candidates.Count -eq 1) { return $candidates[0] }
        throw (New-Failure 'HandlerNotFound' "no inline Script, and the task folder holds $($candidates.Count) .ps1 files at its top level (exactly one is needed)")
    }

    function Invoke-CustomerScript([string]$ScriptPath, [string]$TaskDir, [int]$MaxItems) {
        # Run the script in a dynamic module (a scope of its own), capture its pipeline and its error
        # stream (2>&1), and turn the outcome into an R frame body.
        $state = @{ Last = $null; Errors = [System.Collections.Generic.List[object]]::new() }
        $terminating = $null
        $sandbox = New-Module -Name ScriptboxCustomer -ScriptBlock { Set-StrictMode -Off }
        $ErrorActionPreference = 'Continue'
        try {
            do {
                # The do/while(false) loop catches a stray `break`/`continue` of the script, which
                # would otherwise unwind through the bootstrap.
                & $sandbox {
                    $InformationPreference = 'Continue'   # Write-Information reaches the log
                    $ProgressPreference = 'SilentlyContinue'   # no progress bars in a log
                    & ($args[0])
                } $ScriptPath 2>&1 | ForEach-Object {
                    if ($_ -is [System.Management.Automation.ErrorRecord]) {
                        if ([string]$_.FullyQualifiedErrorId -like 'NativeCommandError*') {
                            [Console]::Error.WriteLine([string]$_.Exception.Message)   # a native program's stderr
                        } else {
                            $state.Errors.Add($_)
                        }
                    } else {
                        $state.Last = $_
                    }
                }
            } while ($false)
        } catch {
            $terminating = $_
        }
        try { [Console]::Out.Flush() } catch { }
        if ($null -ne $terminating) { return ConvertTo-ErrorBody $terminating $TaskDir }
        if ($state.Errors.Count -gt 0) { return ConvertTo-ErrorBody $state.Errors[0] $TaskDir }
        try {
            return ConvertTo-PayloadBody $state.Last $MaxItems
        } catch {
            return ConvertTo-ErrorBody $_ $TaskDir
        }
    }

    function Invoke-Request {
        # Read the request, prepare the task folder, run the script; return the R frame body.
        $stdin = [Console]::OpenStandardInput()
        $leftover = [System.IO.MemoryStream]::new()
        $header = ConvertFrom-RequestHeader (Read-RequestHeader $stdin $leftover)
        $taskDir = $header.TaskDir
        if ([System.IO.Directory]::Exists($taskDir) -or [System.IO.File]::Exists($taskDir)) {
            throw (New-Failure 'ProtocolError' 'cannot create task_dir: it already exists')
        }
        try {
            [void][System.IO.Directory]::CreateDirectory($taskDir)
        } catch {
            throw (New-Failure 'ProtocolError' ("cannot create task_dir: " + $_.Exception.Message))
        }

        $archive = Read-Archive $stdin $leftover $header.ArchiveBytes
        $written = [System.Collections.Generic.HashSet[string]]::new([System.StringComparer]::Ordinal)
        try {
            if ($archive.Length -gt 0) { Write-ArchiveFiles $archive $taskDir $written }
        } catch {
            if ($_.Exception.Data['scriptbox.type']) { throw }
            throw (New-Failure 'ProtocolError' ("archive is not a valid ustar stream: " + $_.Exception.Message))
        }
        $archive = $null

        Add-Type -AssemblyName System.IO.Compression
        $dirs = [System.Collections.Generic.HashSet[string]]::new([System.StringComparer]::Ordinal)
        $files = [System.Collections.Generic.HashSet[string]]::new([System.StringComparer]::Ordinal)
        foreach ($name in $written) { [void]$files.Add($name) }
        $budget = @{ Bytes = [long]0; Entries = [long]0; MaxBytes = $header.UnzipBytes; MaxEntries = $header.UnzipEntries }
        foreach ($zipName in $header.Zips) {
            if (-not $written.Contains($zipName)) { throw (New-Failure 'ProtocolError' "zips names '$zipName', which is not in the archive") }
            Expand-ZipAttachment $zipName $taskDir $files $dirs $budget
        }

        $scriptPath = Find-ScriptToRun $taskDir
        Initialize-AwsEgress $header.Aws   # credentials and the relay, before the script runs
        $env:InputPayload = $header.PayloadJson
        Set-Location -LiteralPath $taskDir
        [Environment]::CurrentDirectory = $taskDir   # for .NET calls with relative paths
        return Invoke-CustomerScript $scriptPath $taskDir ([int]$header.PayloadItems)
    }

    # ------------------------------------------------------------------------------------------------
    # Main
    # ------------------------------------------------------------------------------------------------

    # The real stdout, kept for frames. (.NET duplicates fd 1 close-on-exec for this stream.)
    $RealStdout = [Console]::OpenStandardOutput()
    $FrameLock = [System.Threading.SemaphoreSlim]::new(1, 1)   # one frame at a time on the real stdout
    $PumpState = [hashtable]::Synchronized(@{ Closed = $false; Broken = $false })
    $pump = $null
    $AwsRelays = New-Object System.Collections.ArrayList   # the relay runspace, referenced until exit
    $body = $null
    try {
        $pump = Start-OutputPump
        $body = Invoke-Request
    } catch {
        $type = $_.Exception.Data['scriptbox.type']
        if ($type) {
            $body = ConvertTo-FailureBody $type $_.Exception.Message @()
        } else {
            $body = ConvertTo-FailureBody 'BootstrapError' ("scriptbox bootstrap failed: " + $_.Exception.GetType().Name + ": " + $_.Exception.Message) @()
        }
    }
    # A process the script started could hold the real stdout and write a result frame of its own
    # before ours: the first R frame is the result, so nothing else may be left when it is written.
    try {
        if (Test-MayEndOtherProcesses) { Stop-OtherProcesses 1.0 }
    } catch {
        # Ending them is best effort; the host ignores every frame after the first R frame anyway.
    }
    Stop-OutputPump $pump
    $FrameLock.Wait()
    try {
        $PumpState.Closed = $true
        Write-ResultFrame $body
    } catch {
        # Nobody is listening: the host reports the missing result itself.
    } finally {
        [void]$FrameLock.Release()
    }
    [Environment]::Exit(0)
}
