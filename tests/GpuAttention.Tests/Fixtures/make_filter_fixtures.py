import zlib,struct,subprocess,sys
# Re-encodes rgb8.ppm (ImageMagick output) as PNG with one fixed filter type per file.
d=subprocess.run(['/usr/bin/convert','rgb8.ppm','-depth','8','rgb:-'],capture_output=True).stdout
w,h,bpp=13,7,3
rows=[d[r*w*bpp:(r+1)*w*bpp] for r in range(h)]
def paeth(a,b,c):
    p=a+b-c; pa,pb,pc=abs(p-a),abs(p-b),abs(p-c)
    return a if pa<=pb and pa<=pc else (b if pb<=pc else c)
def filt(t,cur,prev):
    out=bytearray()
    for i,x in enumerate(cur):
        a=cur[i-bpp] if i>=bpp else 0; b=prev[i]; c=prev[i-bpp] if i>=bpp else 0
        pred=[0,a,b,(a+b)//2,paeth(a,b,c)][t]
        out.append((x-pred)&255)
    return bytes(out)
def chunk(t,data): return struct.pack('>I',len(data))+t+data+struct.pack('>I',zlib.crc32(t+data))
for t in range(5):
    raw=b''; prev=bytes(w*bpp)
    for r in rows: raw+=bytes([t])+filt(t,r,prev); prev=r
    png=b'\x89PNG\r\n\x1a\n'+chunk(b'IHDR',struct.pack('>IIBBBBB',w,h,8,2,0,0,0))
    z=zlib.compress(raw,9); png+=chunk(b'IDAT',z[:len(z)//2])+chunk(b'IDAT',z[len(z)//2:])+chunk(b'IEND',b'')
    open(f'rgb8_filter{t}.png','wb').write(png)
